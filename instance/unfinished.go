package instance

import (
	"bytes"
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/uplinkhq/uplink/storage"
)

// The engine asks for unfinished operations every few seconds on every
// replica. Rather than read every installation's record each time, the
// service keeps an index: one marker object per unfinished operation,
// written before the record that queues the operation (Service.update)
// and removed after the record that finishes it. A crash between the two
// writes leaves a marker too many, never one too few: a scan that finds
// a marker whose operation is finished or gone removes it.
const unfinishedPrefix = "meta/unfinished/"

// fullScan is how often the index is checked against every record: an
// uplink older than the index, still running beside this one during a
// rolling upgrade, queues operations without markers.
const fullScan = 5 * time.Minute

// staleMarker is how long a marker may name an operation its record does
// not hold yet (a queue whose record write failed) before it is removed;
// far longer than a record write takes.
const staleMarker = 10 * time.Minute

func unfinishedKey(name string, seq int64) string {
	return fmt.Sprintf("%s%s/%012d", unfinishedPrefix, name, seq)
}

// parseUnfinishedKey returns the installation and sequence number of a
// marker; name is "" for a key that is none.
func parseUnfinishedKey(key string) (name string, seq int64) {
	name, n, ok := strings.Cut(strings.TrimPrefix(key, unfinishedPrefix), "/")
	seq, err := strconv.ParseInt(n, 10, 64)
	if !ok || err != nil || seq < 1 || ValidName(name) != nil {
		return "", 0
	}
	return name, seq
}

type unfinishedIndex struct {
	d storage.Driver
	// scanned is when (unix nanoseconds) a full scan of the records last
	// marked every unfinished operation; 0 before the first.
	scanned atomic.Int64
}

func (x *unfinishedIndex) mark(ctx context.Context, id string) error {
	seq, name := opSeq(id)
	_, err := x.d.Put(ctx, unfinishedKey(name, seq), bytes.NewReader([]byte(id)), int64(len(id)), storage.Condition{})
	return err
}

// unmark is best effort: a marker left behind is removed by a later scan.
func (x *unfinishedIndex) unmark(ctx context.Context, id string) {
	seq, name := opSeq(id)
	_ = x.d.Delete(context.WithoutCancel(ctx), unfinishedKey(name, seq))
}

// Unfinished implements operation.Journal: the queued and running
// operations, oldest first per installation (they run in order). The
// first call, and one every fullScan, reads every record to index what
// an older uplink queued; the others list the index and read only the
// records it names.
func (s *Service) Unfinished(ctx context.Context) ([]string, error) {
	if last := s.unfinished.scanned.Load(); last != 0 && time.Since(time.Unix(0, last)) < fullScan {
		return s.indexedUnfinished(ctx)
	}
	start := time.Now()
	rs, err := s.records(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, r := range rs {
		for i := len(r.Operations) - 1; i >= 0; i-- {
			if op := r.Operations[i]; !op.State.Done() {
				if err := s.unfinished.mark(ctx, op.ID); err != nil {
					return nil, err
				}
				ids = append(ids, op.ID)
			}
		}
	}
	s.unfinished.scanned.Store(start.UnixNano())
	return ids, nil
}

func (s *Service) indexedUnfinished(ctx context.Context) ([]string, error) {
	infos, err := s.d.List(ctx, unfinishedPrefix)
	if err != nil {
		return nil, err
	}
	var ids []string
	records := map[string]*Record{}
	for _, info := range infos {
		name, seq := parseUnfinishedKey(info.Key)
		if name == "" {
			continue
		}
		r, ok := records[name]
		if !ok {
			if r, _, err = s.load(ctx, name); err != nil && !storage.IsNotFound(err) {
				return nil, err
			}
			records[name] = r
		}
		switch unfinished, known := r.unfinished(seq); {
		case unfinished:
			ids = append(ids, opID(name, seq))
		case known, !info.ModTime.IsZero() && time.Since(info.ModTime) > staleMarker:
			_ = s.d.Delete(ctx, info.Key)
		}
	}
	return ids, nil
}

// unfinished reports whether r's operation seq is queued or running;
// known is false when r (nil: not written yet) does not hold it yet.
func (r *Record) unfinished(seq int64) (unfinished, known bool) {
	if r == nil || r.Seq < seq {
		return false, false
	}
	id := opID(r.Name, seq)
	for _, op := range r.Operations {
		if op.ID == id {
			return !op.State.Done(), true
		}
	}
	// Only finished operations leave the record (archive).
	return false, true
}
