package cond

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestVar(t *testing.T) {
	var mu sync.Mutex
	var v Var
	done := make(chan error)
	mu.Lock()
	go func() {
		mu.Lock()
		v.Broadcast()
		mu.Unlock()
	}()
	if err := v.Wait(context.Background(), &mu); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	mu.Unlock()
	go func() {
		mu.Lock()
		err := v.Wait(ctx, &mu)
		mu.Unlock()
		done <- err
	}()
	if err := <-done; err != context.DeadlineExceeded {
		t.Fatalf("Wait after the deadline = %v", err)
	}
}
