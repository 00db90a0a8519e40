package incus

import (
	"context"
	"net/http"
	"net/url"
)

// GetNetworks lists the networks visible in the project.
func (c *ProtocolIncus) GetNetworks(ctx context.Context) ([]Network, error) {
	var list []Network
	_, err := c.queryStruct(ctx, http.MethodGet, "/1.0/networks", url.Values{"recursion": {"1"}}, nil, "", &list)
	return list, err
}

// GetNetworkLeases lists the leases of a managed network as seen from the
// client's project (UseProject). The server keeps a dynamic lease only if
// its MAC belongs to an instance of the project, but DHCPv6 leases have no
// MAC and pass unfiltered (with an empty Hwaddr), and "uplink" entries name
// other networks: for access control, trust only leases with a Hwaddr.
func (c *ProtocolIncus) GetNetworkLeases(ctx context.Context, network string) ([]NetworkLease, error) {
	var list []NetworkLease
	_, err := c.queryStruct(ctx, http.MethodGet, "/1.0/networks/"+url.PathEscape(network)+"/leases", nil, nil, "", &list)
	return list, err
}
