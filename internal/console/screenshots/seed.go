package main

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"log"
	"path/filepath"
	"strings"
	"testing"

	"github.com/uplinkhq/uplink/internal/api"
	"github.com/uplinkhq/uplink/internal/apktest"
	"github.com/uplinkhq/uplink/internal/client"
)

const app = "acme/hello"

// site is what seed made: the pages photograph visits.
type site struct {
	api      *client.Client
	commits  []string // on main, oldest first
	tracking string   // the installation that tracks main
	pinned   string   // the one the rollback pins (through the console)
	failed   string   // the operation of tracking's failed attempt
}

// releases are main's commits, oldest first.
var releases = []struct{ version, message, author string }{
	{"1.0-r0", "First release: greet in English", "Ada Lovelace"},
	{"1.1-r0", "Greet in French and German", "Grace Hopper"},
	{"1.2-r0", "Read the greeting from /etc/hello.conf", "Ada Lovelace"},
	{"1.3-r0", "Faster start-up: cache the greeting", "Linus Pauling"},
}

// seed registers two keys for acme/hello, publishes main's commits (the
// third tagged v1.2.0) and a branch signed by the second key, and creates
// two installations tracking main; a change of one to that branch fails
// at verify-package, as its key is not the installation's.
func seed(ctx context.Context, admin, tmp string) (_ *site, err error) {
	defer recovered(&err)
	s := &site{api: client.New(admin, token), tracking: "web", pinned: "web-canary"}
	ops := apktest.GenerateKey(tb{})
	ops.Name = "ops@acme.example-5f3a9c1e.rsa.pub"
	sandbox := apktest.GenerateKey(tb{})
	sandbox.Name = "ci-sandbox@acme.example-0b7e44d2.rsa.pub"
	for _, k := range []apktest.Key{ops, sandbox} {
		if _, _, err := s.api.PutKey(ctx, app, k.Name, k.PublicPEM()); err != nil {
			return nil, err
		}
	}
	for i, r := range releases {
		commit := sha(r.message)
		req := api.PublishRequest{Commit: commit, Branch: "main", Message: r.message, Author: r.author}
		if i == 2 {
			req.Tags = []string{"v1.2.0"}
		}
		if err := s.publish(ctx, filepath.Join(tmp, commit), ops, r.version, req); err != nil {
			return nil, err
		}
		s.commits = append(s.commits, commit)
	}
	exp := api.PublishRequest{Commit: sha("experiment"), Branch: "experiment", Message: "Try the new greeting engine", Author: "Linus Pauling"}
	if err := s.publish(ctx, filepath.Join(tmp, "experiment"), sandbox, "2.0_alpha1-r0", exp); err != nil {
		return nil, err
	}
	for name, count := range map[string]int{s.tracking: 2, s.pinned: 1} {
		spec := api.Spec{App: app, Package: "hello", Channel: api.Channel{Branch: "main"}, KeyName: ops.Name,
			Instances: api.Instances{Count: count, Image: "alpine/3.20"}}
		v, _, err := s.api.PutInstallation(ctx, name, spec)
		if err != nil {
			return nil, fmt.Errorf("installation %s: %w", name, err)
		}
		if v.LastOperation != nil {
			if err := s.wait(ctx, v.LastOperation.ID, api.Succeeded); err != nil {
				return nil, err
			}
		}
	}
	op, err := s.api.SetChannel(ctx, s.tracking, api.Channel{Branch: "experiment"})
	if err != nil {
		return nil, err
	}
	s.failed = op.ID
	return s, s.wait(ctx, op.ID, api.Failed)
}

// publish builds package hello at version, signed by key, uploads it
// (packages first, the index last, as CI does) and publishes it.
func (s *site) publish(ctx context.Context, dir string, key apktest.Key, version string, req api.PublishRequest) error {
	files := apktest.BuildRepository(tb{}, key, apktest.DefaultArch, apktest.Package{
		Name: "hello", Version: version, Description: "greets the world",
		Files: []apktest.File{{Path: "usr/bin/hello", Mode: 0o755, Data: []byte("#!/bin/sh\necho hello " + version + "\n")}},
	})
	apktest.WriteDir(tb{}, dir, files)
	index := apktest.DefaultArch + "/APKINDEX.tar.gz"
	for p := range files {
		if p != index {
			if err := s.upload(ctx, dir, req.Commit, p); err != nil {
				return err
			}
		}
	}
	if err := s.upload(ctx, dir, req.Commit, index); err != nil {
		return err
	}
	_, err := s.api.Publish(ctx, app, req)
	return err
}

func (s *site) upload(ctx context.Context, dir, commit, p string) error {
	arch, name, _ := strings.Cut(p, "/")
	return s.api.Upload(ctx, app, commit, arch, name, filepath.Join(dir, filepath.FromSlash(p)))
}

// wait follows an operation to its end and checks that it ended in want.
func (s *site) wait(ctx context.Context, id string, want api.State) error {
	op, err := s.api.Watch(ctx, id, nil)
	if err != nil {
		return fmt.Errorf("following %s: %w", id, err)
	}
	if op.State != want {
		return fmt.Errorf("operation %s %s (%s), want %s", id, op.State, op.Error, want)
	}
	return nil
}

// sha is a made-up commit SHA, the same on every run.
func sha(label string) string { return fmt.Sprintf("%x", sha1.Sum([]byte(label))) }

// tb lets the program build with apktest, which reports through
// testing.TB: a failure panics with a failure, which seed returns.
type tb struct{ testing.TB }

type failure struct{ err error }

func (tb) Helper()                         {}
func (tb) Fatal(args ...any)               { panic(failure{errors.New(fmt.Sprint(args...))}) }
func (tb) Fatalf(format string, a ...any)  { panic(failure{fmt.Errorf(format, a...)}) }
func (tb) Errorf(format string, a ...any)  { panic(failure{fmt.Errorf(format, a...)}) }
func (tb) Logf(format string, args ...any) { log.Printf(format, args...) }

// recovered turns a failure of tb into *err.
func recovered(err *error) {
	if r := recover(); r != nil {
		f, ok := r.(failure)
		if !ok {
			panic(r)
		}
		*err = f.err
	}
}
