package distribution

import "testing"

func TestRedisBreaker(t *testing.T) {
	var b RedisBreaker
	if !b.Usable() {
		t.Fatal("the zero value keeps Redis off")
	}
	if !b.Failed() || b.Usable() {
		t.Fatal("a first failure does not start an outage")
	}
	if b.Failed() {
		t.Fatal("a failure during an outage starts another")
	}
	b.Answered()
	if !b.Usable() {
		t.Fatal("Redis stays off after it answered")
	}
}
