// Package cond is the condition variable the in-tree CUSE devices wait on:
// like sync.Cond it wakes every waiter at once, but a wait also ends when
// the caller's context does, so a signal to the process that made a
// request ends its wait. It must never wake anyone but on Broadcast or the
// waiter's own context.
package cond

import (
	"context"
	"sync"
)

// Var is a condition variable guarded by the caller's lock: each method is
// called with that lock held. The zero value is ready.
type Var struct {
	ch chan struct{} // closed by Broadcast; nil while nobody waits
}

// Broadcast wakes every goroutine waiting on v.
func (v *Var) Broadcast() {
	if v.ch != nil {
		close(v.ch)
		v.ch = nil
	}
}

// Wait unlocks mu, waits for the next Broadcast or the end of ctx, and
// locks mu again before it returns, either way. It returns ctx.Err() when
// ctx ended first.
func (v *Var) Wait(ctx context.Context, mu sync.Locker) error {
	if v.ch == nil {
		v.ch = make(chan struct{})
	}
	ch := v.ch
	mu.Unlock()
	defer mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
