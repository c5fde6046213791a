package cuse

import "testing"

func TestCheckBeforeStart(t *testing.T) {
	s, err := New(&pipeDev{}, Options{Name: "health0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Check(0); err != nil {
		t.Fatalf("Check before start: %v", err)
	}
}
