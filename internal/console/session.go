package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/uplinkhq/uplink/storage"
)

// Sessions are stateless signed cookies, "<id>.<expiry>.<mac>", the MAC an
// HMAC-SHA256 under a key kept in storage: created once by whichever
// replica needs it first, read by every other, so a session survives a
// restart and works on every replica. Signing out writes a revocation
// record under revokedPrefix+id holding the cookie's expiry; every replica
// checks it on each request, and records past their expiry are deleted by
// the next sign-out, so what is stored stays bounded by the sign-outs of
// one session lifetime.
const (
	keyKey        = "meta/console/key"
	revokedPrefix = "meta/console/signed-out/"
	// SessionTTL is how long a sign-in lasts, in the cookie and on the
	// server.
	SessionTTL = 12 * time.Hour
)

var errNoSession = errors.New("no valid session")

type session struct {
	ID      string
	Expires time.Time
}

type sessions struct {
	d storage.Driver

	mu  sync.Mutex
	key []byte
	// revoked remembers sessions known to be signed out, which can never
	// come back (a positive answer only: another replica may revoke).
	revoked *lru.Cache[string, struct{}]
}

func newSessions(d storage.Driver) *sessions {
	c, _ := lru.New[string, struct{}](4096)
	return &sessions{d: d, revoked: c}
}

type storedKey struct {
	Key string `json:"key"`
}

// signingKey loads the key, creating it on first use.
func (s *sessions) signingKey(ctx context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.key != nil {
		return s.key, nil
	}
	var k storedKey
	_, err := storage.ReadJSON(ctx, s.d, keyKey, &k)
	if storage.IsNotFound(err) {
		k.Key = base64.StdEncoding.EncodeToString(randomBytes(32))
		err = storage.WriteJSON(ctx, s.d, keyKey, k, storage.Condition{IfAbsent: true})
		if errors.Is(err, storage.ErrConditionFailed) { // another replica made it first
			_, err = storage.ReadJSON(ctx, s.d, keyKey, &k)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("console key: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(k.Key)
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("console key %s is damaged", keyKey)
	}
	s.key = key
	return key, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return b
}

func mac(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(strings.Join(parts, "|")))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// create starts a session: its cookie value and the session.
func (s *sessions) create(ctx context.Context, now time.Time) (string, session, error) {
	key, err := s.signingKey(ctx)
	if err != nil {
		return "", session{}, err
	}
	ss := session{ID: hex.EncodeToString(randomBytes(16)), Expires: now.Add(SessionTTL).UTC().Truncate(time.Second)}
	exp := strconv.FormatInt(ss.Expires.Unix(), 10)
	return ss.ID + "." + exp + "." + mac(key, "session", ss.ID, exp), ss, nil
}

// verify checks a cookie value: signed, unexpired, not signed out. A
// storage failure is returned as such (not as errNoSession).
func (s *sessions) verify(ctx context.Context, value string, now time.Time) (session, error) {
	id, rest, ok1 := strings.Cut(value, ".")
	exp, sig, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || len(id) != 32 {
		return session{}, errNoSession
	}
	key, err := s.signingKey(ctx)
	if err != nil {
		return session{}, err
	}
	if !hmac.Equal([]byte(sig), []byte(mac(key, "session", id, exp))) {
		return session{}, errNoSession
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || !now.Before(time.Unix(secs, 0)) {
		return session{}, errNoSession
	}
	if _, ok := s.revoked.Get(id); ok {
		return session{}, errNoSession
	}
	_, err = s.d.Stat(ctx, revokedPrefix+id)
	switch {
	case err == nil:
		s.revoked.Add(id, struct{}{})
		return session{}, errNoSession
	case !storage.IsNotFound(err):
		return session{}, err
	}
	return session{ID: id, Expires: time.Unix(secs, 0).UTC()}, nil
}

type revocation struct {
	Expires time.Time `json:"expires"`
}

// revoke signs ss out on every replica, and deletes the revocations of
// sessions that have expired anyway.
func (s *sessions) revoke(ctx context.Context, ss session, now time.Time) error {
	if err := storage.WriteJSON(ctx, s.d, revokedPrefix+ss.ID, revocation{Expires: ss.Expires}, storage.Condition{}); err != nil {
		return err
	}
	s.revoked.Add(ss.ID, struct{}{})
	infos, err := s.d.List(ctx, revokedPrefix)
	if err != nil {
		return nil
	}
	for _, info := range infos {
		// Written at most SessionTTL before its session expired.
		if info.ModTime.Before(now.Add(-SessionTTL)) {
			_ = s.d.Delete(ctx, info.Key)
		}
	}
	return nil
}

// csrf is the session's CSRF token: derived, so nothing is stored.
func (s *sessions) csrf(ctx context.Context, ss session) (string, error) {
	key, err := s.signingKey(ctx)
	if err != nil {
		return "", err
	}
	return mac(key, "csrf", ss.ID), nil
}
