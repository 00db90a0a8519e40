package server

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/uplinkhq/uplink/internal/version"
)

// buildInfo is uplink_build_info{version,revision,goversion} 1: which
// build each replica runs, to join with other series or spot a rollout
// half done.
func buildInfo() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "uplink_build_info",
		Help: "Always 1; the labels say which build of uplink this is.",
		ConstLabels: prometheus.Labels{
			"version": version.Version, "revision": version.Revision, "goversion": version.GoVersion(),
		},
	}, func() float64 { return 1 })
}
