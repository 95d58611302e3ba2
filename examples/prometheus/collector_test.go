//go:build unix

package moltprom_test

import (
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/moltgo/molt"
	moltprom "github.com/moltgo/molt/examples/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// gather returns "name{label="value",...} value" for every sample.
func gather(t *testing.T, reg *prometheus.Registry) []string {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range families {
		for _, m := range f.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName()+"="+`"`+l.GetValue()+`"`)
			}
			name := f.GetName()
			if len(labels) > 0 {
				name += "{" + strings.Join(labels, ",") + "}"
			}
			out = append(out, name+" "+value(f.GetType(), m))
		}
	}
	sort.Strings(out)
	return out
}

func value(t dto.MetricType, m *dto.Metric) string {
	v := m.GetGauge().GetValue()
	if t == dto.MetricType_COUNTER {
		v = m.GetCounter().GetValue()
	}
	if v > 1e6 { // a timestamp
		return "<time>"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func TestCollector(t *testing.T) {
	upg, err := molt.New(molt.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer upg.Stop()
	ln, err := upg.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(moltprom.NewCollector(upg)); err != nil {
		t.Fatalf("Register: %v", err)
	}
	check := func(want []string) {
		t.Helper()
		got := gather(t, reg)
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	check([]string{
		`molt_generation 1`,
		`molt_listeners{inherited="false",network="tcp4"} 1`,
		`molt_start_time_seconds <time>`,
		`molt_state{state="draining"} 0`,
		`molt_state{state="ready"} 0`,
		`molt_state{state="starting"} 1`,
		`molt_state{state="stopped"} 0`,
		`molt_state{state="upgrading"} 0`,
		`molt_upgrades_failed_total 0`,
		`molt_upgrades_total 0`,
	})
	if err := upg.Ready(); err != nil {
		t.Fatal(err)
	}
	got := gather(t, reg)
	if !slices.Contains(got, `molt_state{state="ready"} 1`) {
		t.Errorf("after Ready, metrics lack the ready state:\n%s", strings.Join(got, "\n"))
	}
}
