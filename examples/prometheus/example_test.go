//go:build unix

package moltprom_test

import (
	"fmt"
	"log"

	"github.com/moltgo/molt"
	moltprom "github.com/moltgo/molt/examples/prometheus"
	"github.com/prometheus/client_golang/prometheus"
)

// Register the collector with the registry /metrics serves.
func ExampleNewCollector() {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer upg.Stop()

	reg := prometheus.NewRegistry()
	reg.MustRegister(moltprom.NewCollector(upg))
	// mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))

	families, err := reg.Gather()
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "molt_generation" {
			fmt.Println(f.GetName(), f.GetMetric()[0].GetGauge().GetValue())
		}
	}
	// Output: molt_generation 1
}
