// Package rollout carries operations out on Incus (or LXD): it creates,
// upgrades and removes the instances of installations, observes what they
// run, reconciles them with their channels and admits distribution clients
// by their leases. It talks to Incus through Client, which
// *incus.ProtocolIncus implements.
package rollout

import (
	"context"
	"io"

	"github.com/uplinkhq/uplink/instance/incus"
)

// Client is the Incus calls the rollout makes, in one project, and only
// those.
type Client interface {
	GetInstancesWithFilter(ctx context.Context, t incus.InstanceType, filters []string) ([]incus.Instance, error)
	GetInstance(ctx context.Context, name string) (*incus.Instance, string, error)
	CreateInstance(ctx context.Context, req incus.InstancesPost) (incus.Operation, error)
	PatchInstance(ctx context.Context, name string, patch incus.InstancePut, etag string) error
	UpdateInstanceState(ctx context.Context, name string, state incus.InstanceStatePut, etag string) (incus.Operation, error)
	DeleteInstance(ctx context.Context, name string) (incus.Operation, error)
	ExecInstance(ctx context.Context, name string, exec incus.InstanceExecPost, args *incus.InstanceExecArgs) (int, error)
	CreateInstanceFile(ctx context.Context, name, filePath string, args incus.InstanceFileArgs) error
	GetInstanceFile(ctx context.Context, name, filePath string) (io.ReadCloser, *incus.InstanceFileResponse, error)
	GetNetworks(ctx context.Context) ([]incus.Network, error)
	GetNetworkLeases(ctx context.Context, network string) ([]incus.NetworkLease, error)
}

var _ Client = (*incus.ProtocolIncus)(nil)

// Projects gives the Client of an Incus project.
type Projects func(project string) Client

// InProjects is the Projects of a connection: its UseProject, which
// returns the concrete client and so cannot be in Client itself.
func InProjects(c *incus.ProtocolIncus) Projects {
	return func(project string) Client { return c.UseProject(project) }
}
