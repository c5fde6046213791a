package daemon

import (
	"sync"
	"time"
)

// lifecycle is where a mount or a device is in its life; both embed it.
type lifecycle struct {
	mu       sync.Mutex
	state    string    // guarded by mu
	err      string    // guarded by mu; why it failed or ended
	since    time.Time // guarded by mu; when state was entered
	stopping bool      // guarded by mu; the daemon ends it: its end is expected
}

func (l *lifecycle) setState(state, err string) {
	l.mu.Lock()
	l.state, l.err, l.since = state, err, time.Now()
	l.mu.Unlock()
}

func (l *lifecycle) currentState() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

func (l *lifecycle) running() bool { return l.currentState() == stateRunning }

// snapshot returns the state, why it failed or ended, and since when.
func (l *lifecycle) snapshot() (state, err string, since time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state, l.err, l.since
}

// markStopping records that the daemon ends it (so its end is expected)
// and reports whether it was running.
func (l *lifecycle) markStopping() (wasRunning bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopping = true
	return l.state == stateRunning
}

// stopExpected reports whether the daemon ends it.
func (l *lifecycle) stopExpected() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}
