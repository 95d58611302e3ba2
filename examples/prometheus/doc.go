// Package moltprom exports the state of a molt service as Prometheus
// metrics. It lives in a module of its own so that molt itself depends on
// no metrics library: copy it, or require
// github.com/moltgo/molt/examples/prometheus.
//
//	reg := prometheus.NewRegistry()
//	reg.MustRegister(moltprom.NewCollector(upg))
//	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
//
// The metrics, read from [control.StatusOf] at every scrape:
//
//	molt_generation                      this process's generation (1 for the first)
//	molt_state{state}                    1 for the Upgrader's current state, 0 for the others
//	molt_start_time_seconds              when this generation started (Unix time)
//	molt_upgrades_total                  successful upgrades of the chain (generation - 1)
//	molt_upgrades_failed_total           failed upgrades of the chain
//	molt_last_upgrade_success            1 if the chain's latest upgrade succeeded, 0 if it failed
//	molt_last_upgrade_duration_seconds   its duration
//	molt_last_upgrade_timestamp_seconds  when it ended (Unix time)
//	molt_listeners{network,inherited}    listening sockets of the inventory
//
// The last-upgrade metrics are absent until the chain has upgraded once.
// Alert on molt_upgrades_failed_total increasing, or on
// molt_last_upgrade_success == 0.
//
// The server directory holds a complete service: HTTP, /metrics, the
// control socket, signals and the drain.
package moltprom
