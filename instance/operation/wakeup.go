package operation

// Wakeup carries "an operation was queued" from the journal that queued
// it to the engine that runs it. Both are given the same Wakeup when they
// are built, so neither needs the other to exist first.
type Wakeup struct{ c chan struct{} }

// NewWakeup returns a Wakeup with no signal pending.
func NewWakeup() *Wakeup { return &Wakeup{c: make(chan struct{}, 1)} }

// Signal never blocks: signals sent before the engine looks coalesce into
// one, since one scan finds every queued operation. A nil Wakeup ignores it.
func (w *Wakeup) Signal() {
	if w == nil {
		return
	}
	select {
	case w.c <- struct{}{}:
	default:
	}
}

// C delivers the pending signal; a nil Wakeup never does.
func (w *Wakeup) C() <-chan struct{} {
	if w == nil {
		return nil
	}
	return w.c
}
