package incus

import (
	"reflect"
	"testing"
)

func TestNetworksAndLeases(t *testing.T) {
	forDialects(t, func(t *testing.T, f *fakeDaemon) {
		f.reply("GET /1.0/networks", 200, syncBody(`[{"name":"incusbr0","description":"","type":"bridge","managed":true,
"status":"Created","config":{"ipv4.address":"10.0.3.1/24"},"used_by":["/1.0/profiles/default"],"locations":["none"],"project":"default"},
{"name":"eth0","type":"physical","managed":false,"status":"","config":{},"used_by":null,"locations":null}]`))
		f.reply("GET /1.0/networks/incusbr0/leases", 200, syncBody(`[{"hostname":"acme-app-01","hwaddr":"00:16:3e:2c:89:d9",
"address":"10.0.3.17","type":"dynamic","location":"none","project":"acme.app"},
{"hostname":"acme-app-01","hwaddr":"","address":"fd42::17","type":"dynamic","location":"none"}]`))
		c := f.connect().UseProject("acme.app")
		nets, err := c.GetNetworks(testCtx(t))
		if err != nil {
			t.Fatal(err)
		}
		if len(nets) != 2 || nets[0].Name != "incusbr0" || !nets[0].Managed || nets[1].Managed {
			t.Errorf("networks %+v", nets)
		}
		leases, err := c.GetNetworkLeases(testCtx(t), "incusbr0")
		if err != nil {
			t.Fatal(err)
		}
		want := []NetworkLease{
			{Hostname: "acme-app-01", Hwaddr: "00:16:3e:2c:89:d9", Address: "10.0.3.17", Type: "dynamic", Project: "acme.app"},
			{Hostname: "acme-app-01", Address: "fd42::17", Type: "dynamic"},
		}
		if !reflect.DeepEqual(leases, want) {
			t.Errorf("leases %+v", leases)
		}
		if q := f.request("GET", "/1.0/networks").RawQuery; q != "project=acme.app&recursion=1" {
			t.Errorf("networks query %q", q)
		}
		if q := f.request("GET", "/1.0/networks/incusbr0/leases").RawQuery; q != "project=acme.app" {
			t.Errorf("leases query %q", q)
		}
	})
}
