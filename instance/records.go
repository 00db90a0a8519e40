package instance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/uplinkhq/uplink/instance/operation"
	"github.com/uplinkhq/uplink/storage"
)

const prefix = "meta/installations/"

func recordKey(name string) string { return prefix + name }

func archivePrefix(name string) string { return "meta/operations/" + name + "/" }

func archiveKey(name string, seq int64) string {
	return fmt.Sprintf("%s%012d", archivePrefix(name), seq)
}

func (s *Service) load(ctx context.Context, name string) (*Record, string, error) {
	var r Record
	etag, err := storage.ReadJSON(ctx, s.d, recordKey(name), &r)
	if err != nil {
		return nil, "", err
	}
	return &r, etag, nil
}

// loadOr loads name's record, or returns missing when there is none.
func (s *Service) loadOr(ctx context.Context, name string, missing error) (*Record, error) {
	r, _, err := s.load(ctx, name)
	if storage.IsNotFound(err) {
		return nil, missing
	}
	return r, err
}

// loadLive loads a record that exists and is not deleted; anything else
// is not found.
func (s *Service) loadLive(ctx context.Context, name string) (*Record, error) {
	if ValidName(name) != nil {
		return nil, notFound(name)
	}
	return s.loadExisting(ctx, name)
}

// loadExisting is loadLive for a name that is known to be valid or that
// storage may reject.
func (s *Service) loadExisting(ctx context.Context, name string) (*Record, error) {
	r, err := s.loadOr(ctx, name, notFound(name))
	if err == nil && r.deleted() {
		return nil, notFound(name)
	}
	return r, err
}

// update applies fn to the record by compare-and-swap, retrying when
// another writer got there first. exists is false for a new record. The
// operations fn queues are marked unfinished before the record that
// holds them is written, so the engine cannot miss one.
func (s *Service) update(ctx context.Context, name string, fn func(r *Record, exists bool) error) (*Record, error) {
	var out *Record
	err := storage.UpdateJSON(ctx, s.d, recordKey(name), func(r *Record, exists bool) (bool, error) {
		if !exists {
			*r = Record{Name: name}
		}
		seq := r.Seq
		if err := fn(r, exists); err != nil {
			return false, err
		}
		for _, op := range r.Operations {
			if n, _ := opSeq(op.ID); n > seq && !op.State.Done() {
				if err := s.unfinished.mark(ctx, op.ID); err != nil {
					return false, err
				}
			}
		}
		out = r
		return true, nil
	})
	return out, err
}

// records reads every installation's record, deleted ones included.
func (s *Service) records(ctx context.Context) ([]*Record, error) {
	infos, err := s.d.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	var out []*Record
	for _, info := range infos {
		name := strings.TrimPrefix(info.Key, prefix)
		if ValidName(name) != nil {
			continue
		}
		r, _, err := s.load(ctx, name)
		if storage.IsNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (r *Record) active() *operation.Operation {
	for _, op := range r.Operations {
		if !op.State.Done() {
			return op
		}
	}
	return nil
}

func (r *Record) deleted() bool { return r.DeletedAt != nil }

// newOp records a queued operation in r.
func (r *Record) newOp(kind operation.Kind, from, to *operation.Endpoint, now time.Time) *operation.Operation {
	r.Seq++
	op := &operation.Operation{
		ID: opID(r.Name, r.Seq), Kind: kind, Installation: r.Name, State: operation.Queued,
		From: from, To: to, Steps: []operation.Step{}, Log: []operation.LogLine{}, CreatedAt: now,
	}
	if to != nil {
		op.Commit = to.Resolved
	}
	r.Operations = slices.Insert(r.Operations, 0, op)
	return op
}

// archive moves finished operations beyond KeepOperations to their own
// objects. They are written before they leave the record, so a crash in
// between leaves a copy in both places, never in neither. Once it wrote
// one, it trims the archive to the newest KeepHistory.
func (s *Service) archive(ctx context.Context, r *Record) error {
	wrote := false
	defer func() {
		if wrote {
			s.trimArchive(ctx, r.Name)
		}
	}()
	for len(r.Operations) > KeepOperations {
		op := r.Operations[len(r.Operations)-1]
		if !op.State.Done() {
			return nil
		}
		seq, _ := opSeq(op.ID)
		b, err := json.Marshal(op)
		if err != nil {
			return err
		}
		if _, err := s.d.Put(ctx, archiveKey(r.Name, seq), bytes.NewReader(b), int64(len(b)), storage.Condition{}); err != nil {
			return err
		}
		r.Operations = r.Operations[:len(r.Operations)-1]
		wrote = true
	}
	return nil
}

// maxTrim bounds the deletes of one trimArchive, so an archive grown
// before a limit existed shrinks over several archives instead of
// holding up one operation.
const maxTrim = 100

// trimArchive deletes name's archived operations older than the newest
// KeepHistory. A failure is only logged: the operation goes on, and the
// next archive lists again and retries.
func (s *Service) trimArchive(ctx context.Context, name string) {
	infos, err := s.d.List(ctx, archivePrefix(name))
	if err != nil {
		s.cfg.Logger.Warn("listing archived operations to trim", "installation", name, "err", err)
		return
	}
	// Keys sort by zero-padded sequence: the oldest come first.
	old := infos[:max(0, len(infos)-s.cfg.KeepHistory)]
	for _, info := range old[:min(len(old), maxTrim)] {
		if err := s.d.Delete(ctx, info.Key); err != nil {
			s.cfg.Logger.Warn("deleting an archived operation past --keep-history", "key", info.Key, "err", err)
		}
	}
}

// readArchived reads an operation archive moved out of its record.
func (s *Service) readArchived(ctx context.Context, key string) (*operation.Operation, error) {
	var op operation.Operation
	if _, err := storage.ReadJSON(ctx, s.d, key, &op); err != nil {
		return nil, err
	}
	return &op, nil
}

func opID(name string, seq int64) string { return name + "." + strconv.FormatInt(seq, 10) }

// opSeq splits an operation id into its sequence number and its
// installation; name is "" for an id uplink does not make.
func opSeq(id string) (seq int64, name string) {
	i := strings.LastIndexByte(id, '.')
	if i < 0 {
		return 0, ""
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	if err != nil || seq < 1 || ValidName(id[:i]) != nil {
		return 0, ""
	}
	return seq, id[:i]
}

// public returns a copy, so callers never share the record being updated.
func public(op *operation.Operation) *operation.Operation { c := *op; return &c }
