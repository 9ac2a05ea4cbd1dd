// Package conformance wraps the upstream Gateway API conformance suite so that it can be built with
// `go test -c` outside a gateway-api checkout; tests/e2e/gateway-conformance runs the binary.
package conformance

import (
	"testing"

	"sigs.k8s.io/gateway-api/conformance"
)

func TestConformance(t *testing.T) { conformance.RunConformance(t) }
