package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sirupsen/logrus"

	"github.com/fusegate/fusegate/internal/daemon"
	"github.com/fusegate/fusegate/systemd"
)

func init() {
	register(command{name: "serve", summary: "run the daemon: every mount and device of a configuration", run: runServe})
}

const serveDescription = `Run fusegate's daemon in the foreground: mount every [[mount]] of the
configuration (a lower directory mirrored at a mount point, under its
policy) and create every [[device]] (a CUSE character device), then serve
them until SIGTERM or SIGINT, which answer the requests in flight, unmount
the mounts and remove the devices.

Without --config it runs the embedded default ('fusegate config default'):
/var/lib/fusegate/media mirrored at /run/fusegate/media under the built-in
Android-style policy, and the loopback device /dev/fusegate-loop when the
kernel has CUSE (else a warning, and the mount still runs). Needs root.

Under systemd (fusegate.service) it reports READY=1 once every mount and
device answered its INIT, pets the watchdog while every serving loop makes
progress, and takes the control socket from fusegate.socket. By hand it
creates the control socket itself (control.socket in the configuration).

  SIGHUP, 'systemctl reload fusegate', 'fusegate ctl reload'
          re-read the configuration and policies and apply them to the
          running mounts and devices; an invalid configuration is rejected
          with the reason and nothing changes
  fusegate ctl status|mounts|devices|metrics
          what is running, and its counters

Restart without unmount (docs/RESTART.md): under systemd every mount's and
device's descriptors and state go into the unit's fd store. At SIGTERM the
daemon asks systemd whether a restart is under way: then it hands mounts
and devices over to the next process, which resumes them; otherwise (stop)
it unmounts and removes them. SIGUSR1 then SIGTERM hands over whatever
systemd says, for a supervisor that keeps the descriptors itself.

Test only: with FUSEGATE_TEST_ONLY_WEDGE=1 in the environment, SIGUSR2 makes
every mount's serving loop stop making progress (to test the watchdog).
Never set it on a real system.`

// testWedgeEnv enables the test-only SIGUSR2 wedge.
const testWedgeEnv = "FUSEGATE_TEST_ONLY_WEDGE"

func runServe(ctx context.Context, e *env, args []string) int {
	fs := e.flagSet("serve", "[--config FILE]", serveDescription)
	configPath := fs.String("config", "", "configuration `FILE` (default: the embedded default configuration)")
	pos, code, ok := e.parse(fs, args)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		return e.usageError(fs, "unexpected arguments %q", pos)
	}
	if *configPath == "" && isSet(fs, "config") {
		return e.usageError(fs, "--config: empty file name")
	}
	if os.Getenv("JOURNAL_STREAM") != "" && e.logFormat == "text" {
		// journald stamps every line itself.
		e.log.SetFormatter(&logrus.TextFormatter{DisableTimestamp: true})
	}

	inherited := systemd.TakeInherited()
	d := daemon.New(daemon.Options{
		Logger:     e.log,
		ConfigPath: *configPath,
		Version:    version,
		Stdout:     e.stdout,
		Inherited:  inherited,
	})

	sigs := make(chan os.Signal, 8)
	wedge := os.Getenv(testWedgeEnv) == "1"
	if wedge {
		e.log.Warnf("TEST ONLY: %s=1: SIGUSR2 wedges every mount's serving loop; never set this on a real system", testWedgeEnv)
	}
	// SIGUSR2 is always caught, so that one sent by mistake neither kills
	// the daemon (leaving stale mounts) nor, without the variable, wedges.
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		for {
			select {
			case <-runCtx.Done():
				return
			case sig := <-sigs:
				switch sig {
				case syscall.SIGHUP:
					go d.Reload(runCtx, "SIGHUP")
				case syscall.SIGUSR1:
					e.log.Info("SIGUSR1: the next stop hands mounts and devices over to a successor")
					d.RequestHandover()
				case syscall.SIGUSR2:
					if !wedge {
						e.log.Warnf("SIGUSR2 ignored (it wedges serving loops only in tests, with %s=1)", testWedgeEnv)
						continue
					}
					d.WedgeForTest()
				default:
					e.log.WithField("signal", signalName(sig)).Info("stopping")
					stop()
					return
				}
			}
		}
	}()
	if err := d.Run(runCtx); err != nil {
		return e.fail("serve: %v", err)
	}
	return exitOK
}
