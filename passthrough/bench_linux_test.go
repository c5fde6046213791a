package passthrough

import (
	"context"
	"strconv"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/fusegate/fusegate/fusedev/abi"
)

func BenchmarkCreateRelease(b *testing.B) {
	fs, _ := newFS(b, Options{})
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var e abi.EntryOut
		var o abi.OpenOut
		name := "f" + strconv.Itoa(i)
		if err := fs.Lookup(ctx, req(abi.OpLookup, 1), name, &e); err != nil {
			b.Fatal(err)
		}
		if err := fs.Create(ctx, req(abi.OpCreate, 1), &abi.CreateIn{Flags: unix.O_WRONLY | unix.O_CREAT | unix.O_EXCL, Mode: 0o644}, name, &e, &o); err != nil {
			b.Fatal(err)
		}
		fs.Release(ctx, req(abi.OpRelease, e.NodeID), &abi.ReleaseIn{Fh: o.Fh})
	}
}

func BenchmarkLookupForget(b *testing.B) {
	fs, dir := newFS(b, Options{})
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		fd, _ := unix.Open(dir+"/f"+strconv.Itoa(i), unix.O_CREAT|unix.O_WRONLY, 0o644)
		unix.Close(fd)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var e abi.EntryOut
		if err := fs.Lookup(ctx, req(abi.OpLookup, 1), "f"+strconv.Itoa(i%1000), &e); err != nil {
			b.Fatal(err)
		}
		fs.Forget(e.NodeID, 1)
	}
}
