package incus

import (
	"context"
	"net/http"
)

// GetServer returns GET /1.0 and its ETag. The client keeps the answer it
// got when connecting for HasExtension and Dialect.
func (c *ProtocolIncus) GetServer(ctx context.Context) (*Server, string, error) {
	var s Server
	etag, err := c.queryStruct(ctx, http.MethodGet, "/1.0", nil, nil, "", &s)
	if err != nil {
		return nil, "", err
	}
	return &s, etag, nil
}
