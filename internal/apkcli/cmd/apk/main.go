// Command apk is the APK client of the test container image: see package
// github.com/uplinkhq/uplink/internal/apkcli. Build it static:
//
//	CGO_ENABLED=0 go build -o apk ./internal/apkcli/cmd/apk
package main

import (
	"os"

	"github.com/uplinkhq/uplink/internal/apkcli"
)

func main() {
	os.Exit(apkcli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
