package main

import (
	"fmt"
	"image/color"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// chartStep is the resolution of the chart.
const chartStep = 100 * time.Millisecond

// chart draws, for every system, the successful requests per chartStep of
// its load phase over time (since its own load began, so the systems'
// schedules line up), and marks each system's upgrades with a triangle of
// its colour below the lines. The file's extension (.png or .svg) picks
// the format.
func (r *report) chart(path string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Successful requests per %v while upgrading (%d clients of each kind: %s)",
		chartStep, r.cfg.clients, joinKinds(r.loads))
	p.X.Label.Text = "seconds since the load began"
	p.Y.Label.Text = fmt.Sprintf("requests per %v", chartStep)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())

	perStep := int(chartStep / slotWidth)
	peak := 0.0
	var series []plotter.XYs
	for _, l := range r.loads {
		var xys plotter.XYs
		if l.rec != nil {
			slots := l.okSlots()
			for i := 0; i+perStep <= len(slots); i += perStep {
				n := 0
				for _, c := range slots[i : i+perStep] {
					n += c
				}
				xys = append(xys, plotter.XY{X: (time.Duration(i) * slotWidth).Seconds(), Y: float64(n)})
				peak = max(peak, float64(n))
			}
		}
		series = append(series, xys)
	}
	for i, l := range r.loads {
		if len(series[i]) == 0 {
			continue
		}
		line, err := plotter.NewLine(series[i])
		if err != nil {
			return err
		}
		line.Color = plotutil.Color(i)
		line.Width = vg.Points(1)
		p.Add(line)
		p.Legend.Add(l.sys.name, line)

		// The upgrades, one row of markers per system below zero.
		l.rec.mu.Lock()
		var marks plotter.XYs
		for _, t := range l.rec.triggers {
			marks = append(marks, plotter.XY{X: t.Seconds(), Y: -peak * 0.04 * float64(i+1)})
		}
		l.rec.mu.Unlock()
		if len(marks) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(marks)
		if err != nil {
			return err
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: plotutil.Color(i), Radius: vg.Points(2.5), Shape: draw.TriangleGlyph{}}
		p.Add(sc)
	}
	if len(r.loads) > 0 {
		// A legend entry that explains the markers.
		key, err := plotter.NewScatter(plotter.XYs{})
		if err != nil {
			return err
		}
		key.GlyphStyle = draw.GlyphStyle{Color: color.Gray{Y: 0x60}, Radius: vg.Points(2.5), Shape: draw.TriangleGlyph{}}
		p.Legend.Add("upgrade triggered", key)
	}
	// Room below zero for the markers, above the peak for the legend; no
	// tick labels below zero.
	p.Y.Min = -peak * 0.04 * float64(len(r.loads)+1)
	p.Y.Max = peak * 1.3
	p.Y.Tick.Marker = nonNegativeTicks{}
	return p.Save(16*vg.Inch, 6*vg.Inch, path)
}

// joinKinds names the kinds of the load (every system has the same).
func joinKinds(loads []*loadResult) string {
	if len(loads) == 0 {
		return ""
	}
	var names []string
	for _, k := range loads[0].kinds {
		names = append(names, k.name)
	}
	return strings.Join(names, ", ")
}

// nonNegativeTicks are gonum's default ticks without those below zero
// (that part of the chart holds the upgrade markers).
type nonNegativeTicks struct{}

func (nonNegativeTicks) Ticks(lo, hi float64) []plot.Tick {
	var out []plot.Tick
	for _, t := range (plot.DefaultTicks{}).Ticks(0, hi) {
		if t.Value >= 0 {
			out = append(out, t)
		}
	}
	return out
}
