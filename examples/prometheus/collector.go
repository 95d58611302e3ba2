package moltprom

import (
	"strconv"

	"github.com/moltgo/molt"
	"github.com/moltgo/molt/control"
	"github.com/prometheus/client_golang/prometheus"
)

// states lists every molt.State, so molt_state has one series per state.
var states = []molt.State{molt.StateStarting, molt.StateReady, molt.StateUpgrading, molt.StateDraining, molt.StateStopped}

// Collector is a prometheus.Collector for one Upgrader. Register it once;
// it reads the Upgrader's status at each scrape and is safe for concurrent
// use.
type Collector struct {
	upg *molt.Upgrader

	generation, state, started               *prometheus.Desc
	upgrades, failed                         *prometheus.Desc
	lastSuccess, lastDuration, lastTimestamp *prometheus.Desc
	listeners                                *prometheus.Desc
}

// NewCollector returns a Collector for upg.
func NewCollector(upg *molt.Upgrader) *Collector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("molt_"+name, help, labels, nil)
	}
	return &Collector{
		upg:           upg,
		generation:    d("generation", "This process's generation: 1 for a process not started by molt."),
		state:         d("state", "1 for the Upgrader's current state, 0 for the others.", "state"),
		started:       d("start_time_seconds", "When this generation started, in seconds since the Unix epoch."),
		upgrades:      d("upgrades_total", "Successful upgrades of the chain that led to this process."),
		failed:        d("upgrades_failed_total", "Failed upgrades of the chain, as far as the control history knows."),
		lastSuccess:   d("last_upgrade_success", "1 if the chain's latest upgrade succeeded, 0 if it failed."),
		lastDuration:  d("last_upgrade_duration_seconds", "Duration of the chain's latest upgrade."),
		lastTimestamp: d("last_upgrade_timestamp_seconds", "When the chain's latest upgrade ended, in seconds since the Unix epoch."),
		listeners:     d("listeners", "Listening and packet sockets of the inventory.", "network", "inherited"),
	}
}

// Describe sends the descriptors of every metric.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.generation, c.state, c.started, c.upgrades, c.failed,
		c.lastSuccess, c.lastDuration, c.lastTimestamp, c.listeners} {
		ch <- d
	}
}

// Collect sends the current values.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	st := control.StatusOf(c.upg)
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	gauge(c.generation, float64(st.Generation))
	for _, s := range states {
		gauge(c.state, boolValue(s.String() == st.State), s.String())
	}
	gauge(c.started, float64(st.Started.UnixNano())/1e9)
	counter(c.upgrades, float64(st.Upgrades))
	counter(c.failed, float64(st.FailedUpgrades))
	if u := st.LastUpgrade; u != nil {
		gauge(c.lastSuccess, boolValue(u.OK))
		gauge(c.lastDuration, u.Duration.Seconds())
		gauge(c.lastTimestamp, float64(u.Started.Add(u.Duration).UnixNano())/1e9)
	}
	type key struct {
		network   string
		inherited bool
	}
	counts := map[key]int{}
	for _, l := range st.Listeners {
		counts[key{l.Network, l.Inherited}]++
	}
	for k, n := range counts {
		gauge(c.listeners, float64(n), k.network, strconv.FormatBool(k.inherited))
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
