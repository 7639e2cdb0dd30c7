//! Charts as SVG, drawn with plotters: histograms, bars, scatter plots coloured by group, and line series.
//! A [`Chart`] that is a notebook cell's last expression displays itself.

use std::collections::HashMap;
use std::path::Path;

use plotters::chart::MeshStyle;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use super::Result;

const SIZE: (u32, u32) = (760, 420);
const LABELS: (&str, u32) = ("sans-serif", 12);
const AXIS_NAMES: (&str, u32) = ("sans-serif", 14);
/// A scatter plot's legend column, right of the plot, so it hides no points.
const LEGEND_WIDTH: u32 = 230;
/// A scatter plot draws at most this many points (every n-th one past it): a browser stays responsive and
/// the notebook file stays small.
pub const MAX_POINTS: usize = 6000;
/// Scatter groups after the most frequent ones share one grey colour ("other").
const COLOURED_GROUPS: usize = 10;

/// An SVG chart.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub svg: String,
}

fn failed<E: std::fmt::Debug>(what: &str) -> impl FnOnce(E) -> Box<dyn std::error::Error + Send + Sync> + '_ {
    move |e| format!("drawing the chart {what:?} failed: {e:?}").into()
}

fn colour(i: usize) -> RGBColor {
    // Tableau 10: distinct, and readable on white.
    const TABLEAU: [(u8, u8, u8); 10] = [
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
        (140, 86, 75),
        (227, 119, 194),
        (127, 127, 127),
        (188, 189, 34),
        (23, 190, 207),
    ];
    let (r, g, b) = TABLEAU[i % TABLEAU.len()];
    RGBColor(r, g, b)
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// A little room around `lo..hi`, and a non-empty range when they are equal.
fn padded(lo: f64, hi: f64) -> std::ops::Range<f64> {
    let span = if hi > lo { hi - lo } else { lo.abs().max(1.0) };
    (lo - span * 0.03)..(hi + span * 0.03)
}

type Area<'b> = DrawingArea<SVGBackend<'b>, plotters::coord::Shift>;
type Plane<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// An SVG drawn by `paint` on a white canvas.
fn draw(title: &str, paint: impl FnOnce(&Area) -> Result<()>) -> Result<Chart> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(failed(title))?;
        paint(&root)?;
        root.present().map_err(failed(title))?;
    }
    Ok(Chart { title: title.to_string(), svg })
}

/// The frame every chart shares: the title above, room for the axes' labels.
fn frame<'a, 'b>(root: &'a Area<'b>, title: &str) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder.caption(title, ("sans-serif", 18)).margin(12).x_label_area_size(42).y_label_area_size(60);
    builder
}

fn whole(v: &f64) -> String {
    format!("{v:.0}")
}

/// The axes of a chart of counts: readable labels, whole numbers up the side, no vertical grid lines.
fn counts_mesh<'m, 'a, 'b, X: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, RangedCoordf64, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, RangedCoordf64, DB> {
    mesh.disable_x_mesh().label_style(LABELS).axis_desc_style(AXIS_NAMES).y_label_formatter(&whole)
}

fn legend<'a, 'b: 'a>(chart: &mut Plane<'a, 'b>, position: SeriesLabelPosition, title: &str) -> Result<()> {
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .position(position)
        .draw()
        .map_err(failed(title))?;
    Ok(())
}

impl Chart {
    /// A histogram of `values` in `bins` equal bins. Values above the 99th percentile go into the last bin,
    /// so one very long text does not squash the rest (the x label says so when it happens).
    pub fn histogram(title: &str, x_label: &str, values: &[f64], bins: usize) -> Result<Chart> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() || bins == 0 {
            return Err(format!("histogram {title:?}: no finite values to draw (or 0 bins)").into());
        }
        sorted.sort_by(f64::total_cmp);
        let lo = sorted[0];
        let p99 = sorted[((sorted.len() - 1) as f64 * 0.99).round() as usize];
        let clipped = sorted.last().is_some_and(|&max| max > p99);
        let hi = if p99 > lo { p99 } else { lo + 1.0 };
        let width = (hi - lo) / bins as f64;
        let mut counts = vec![0u64; bins];
        for v in &sorted {
            counts[(((v - lo) / width) as usize).min(bins - 1)] += 1;
        }
        let top = *counts.iter().max().expect("bins > 0") as f64;
        let x_desc = if clipped {
            format!("{x_label} (values over the 99th percentile, {p99:.0}, in the last bin)")
        } else {
            x_label.to_string()
        };
        draw(title, |root| {
            let mut chart = frame(root, title).build_cartesian_2d(lo..hi, 0.0..top * 1.05).map_err(failed(title))?;
            counts_mesh(&mut chart.configure_mesh()).x_desc(x_desc).y_desc("rows").draw().map_err(failed(title))?;
            chart
                .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                    let x0 = lo + i as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, c as f64)], colour(0).mix(0.75).filled())
                }))
                .map_err(failed(title))?;
            Ok(())
        })
    }

    /// Bars, one per (label, value), in the order given; labels are drawn when there are few enough to read.
    pub fn bars(title: &str, x_label: &str, y_label: &str, bars: &[(String, f64)]) -> Result<Chart> {
        let top = finite_range(bars.iter().map(|b| b.1)).map(|r| r.1).unwrap_or(0.0).max(1e-9);
        let n = bars.len().max(1);
        draw(title, |root| {
            let mut chart = frame(root, title)
                .build_cartesian_2d((0..n).into_segmented(), 0.0..top * 1.05)
                .map_err(failed(title))?;
            let labels: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
            let few = labels.len() <= 24;
            counts_mesh(&mut chart.configure_mesh())
                .x_labels(if few { labels.len() } else { 10 })
                .x_label_formatter(&|x| match x {
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) if few => {
                        labels.get(*i).cloned().unwrap_or_default()
                    }
                    SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => i.to_string(),
                    SegmentValue::Last => String::new(),
                })
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(failed(title))?;
            chart
                .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
                    let mut bar = Rectangle::new(
                        [(SegmentValue::Exact(i), 0.0), (SegmentValue::Exact(i + 1), *v)],
                        colour(0).mix(0.8).filled(),
                    );
                    bar.set_margin(0, 0, if n > 60 { 0 } else { 2 }, if n > 60 { 0 } else { 2 });
                    bar
                }))
                .map_err(failed(title))?;
            Ok(())
        })
    }

    /// Points coloured by group (the ten most frequent groups get a colour each and a legend entry, the
    /// rest are grey "other"); at most [`MAX_POINTS`] are drawn, every n-th one.
    pub fn scatter(title: &str, points: &[[f32; 2]], groups: &[String]) -> Result<Chart> {
        if points.len() != groups.len() {
            return Err(format!("scatter {title:?}: {} points but {} groups", points.len(), groups.len()).into());
        }
        let (x0, x1) = finite_range(points.iter().map(|p| p[0] as f64)).ok_or("scatter: no finite points")?;
        let (y0, y1) = finite_range(points.iter().map(|p| p[1] as f64)).ok_or("scatter: no finite points")?;
        let mut frequency: HashMap<&str, usize> = HashMap::new();
        for g in groups {
            *frequency.entry(g.as_str()).or_default() += 1;
        }
        let mut ranked: Vec<(&str, usize)> = frequency.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        let index: HashMap<&str, usize> =
            ranked.iter().take(COLOURED_GROUPS).enumerate().map(|(i, g)| (g.0, i)).collect();
        let step = points.len().div_ceil(MAX_POINTS).max(1);
        draw(title, |root| {
            let (plot, side) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
            let mut chart =
                frame(&plot, title).build_cartesian_2d(padded(x0, x1), padded(y0, y1)).map_err(failed(title))?;
            chart.configure_mesh().disable_mesh().label_style(LABELS).draw().map_err(failed(title))?;
            let grey = RGBColor(200, 200, 200);
            // "other" first, so the coloured groups are drawn over it.
            let drawn: Vec<usize> = (0..points.len()).step_by(step).collect();
            let point = |i: usize, c: &RGBColor| Circle::new((points[i][0] as f64, points[i][1] as f64), 2, c.filled());
            chart
                .draw_series(
                    drawn.iter().filter(|&&i| !index.contains_key(groups[i].as_str())).map(|&i| point(i, &grey)),
                )
                .map_err(failed(title))?;
            for g in 0..ranked.len().min(COLOURED_GROUPS) {
                let c = colour(g);
                chart
                    .draw_series(
                        drawn.iter().filter(|&&i| index.get(groups[i].as_str()) == Some(&g)).map(|&i| point(i, &c)),
                    )
                    .map_err(failed(title))?;
            }
            // The legend: a coloured dot and "group (rows)" per line, "others" last.
            let mut entries: Vec<(RGBColor, String)> = ranked
                .iter()
                .take(COLOURED_GROUPS)
                .enumerate()
                .map(|(g, (name, count))| (colour(g), format!("{} ({count})", super::html::shorten(name, 30))))
                .collect();
            let others: usize = ranked.iter().skip(COLOURED_GROUPS).map(|g| g.1).sum();
            if others > 0 {
                entries.push((grey, format!("{} others ({others})", ranked.len() - COLOURED_GROUPS)));
            }
            for (line, (c, text)) in entries.iter().enumerate() {
                let y = 50 + line as i32 * 18;
                side.draw(&Circle::new((8, y), 4, c.filled())).map_err(failed(title))?;
                side.draw(&Text::new(text.as_str(), (18, y - 7), ("sans-serif", 11))).map_err(failed(title))?;
            }
            Ok(())
        })
    }

    /// Line series with markers, one colour and legend entry each.
    pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[(String, Vec<(f64, f64)>)]) -> Result<Chart> {
        let all = || series.iter().flat_map(|s| s.1.iter());
        let (x0, x1) = finite_range(all().map(|p| p.0)).ok_or("lines: no finite points")?;
        let (y0, y1) = finite_range(all().map(|p| p.1)).ok_or("lines: no finite points")?;
        draw(title, |root| {
            let mut chart =
                frame(root, title).build_cartesian_2d(padded(x0, x1), padded(y0, y1)).map_err(failed(title))?;
            chart
                .configure_mesh()
                .label_style(LABELS)
                .axis_desc_style(AXIS_NAMES)
                .x_desc(x_label)
                .y_desc(y_label)
                .draw()
                .map_err(failed(title))?;
            for (i, (name, points)) in series.iter().enumerate() {
                let c = colour(i);
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(2)))
                    .map_err(failed(title))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, c.filled()))).map_err(failed(title))?;
            }
            legend(&mut chart, SeriesLabelPosition::LowerRight, title)?;
            Ok(())
        })
    }

    /// Writes the SVG to `path`, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        Ok(whetstone_datasets::write::write_atomic(path.as_ref(), self.svg.as_bytes())?)
    }

    /// How a notebook shows it: the SVG itself.
    pub fn evcxr_display(&self) {
        super::html::emit(&[("text/plain", &format!("Chart: {}", self.title)), ("image/svg+xml", &self.svg)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_is_an_svg_with_one_bar_per_bin_and_clips_the_long_tail() {
        let mut values: Vec<f64> = (0..1000).map(|i| (i % 100) as f64).collect();
        values.push(1e6);
        let c = Chart::histogram("lengths", "characters", &values, 20).unwrap();
        assert!(c.svg.starts_with("<svg") && c.svg.contains("lengths"));
        assert_eq!(c.svg.matches("<rect").count(), 1 + 20, "the background and 20 bins: {}", c.svg.len());
        assert!(c.svg.contains("99th percentile"), "the clipped tail is labelled");
        assert!(Chart::histogram("empty", "x", &[], 10).is_err());
    }

    #[test]
    fn scatter_colours_the_most_frequent_groups_and_caps_the_points() {
        let n = MAX_POINTS * 2 + 10;
        let points: Vec<[f32; 2]> = (0..n).map(|i| [i as f32, (i % 7) as f32]).collect();
        let groups: Vec<String> = (0..n).map(|i| format!("g{}", i % 12)).collect();
        let c = Chart::scatter("pca", &points, &groups).unwrap();
        let circles = c.svg.matches("<circle").count();
        assert!(circles <= MAX_POINTS + COLOURED_GROUPS && circles > MAX_POINTS / 2, "{circles}");
        assert_eq!(c.svg.matches("(1001)").count(), COLOURED_GROUPS, "g0..g9 have 1001 points each: {}", c.svg.len());
        assert!(Chart::scatter("bad", &points[..3], &groups[..2]).is_err());
    }

    #[test]
    fn lines_and_bars_draw_their_series() {
        let series = vec![
            ("kmq".to_string(), vec![(50.0, 30.0), (100.0, 50.0)]),
            ("random".to_string(), vec![(50.0, 25.0), (100.0, 45.0)]),
        ];
        let c = Chart::lines("coverage", "budget", "labels", &series).unwrap();
        assert!(c.svg.contains(">\nkmq\n<") && c.svg.contains(">\nrandom\n<"), "legend entries");
        assert_eq!(c.svg.matches("stroke-width=\"2\" points").count(), 4, "two lines, two legend strokes");
        assert_eq!(c.svg.matches("<circle").count(), 4, "a marker per point");
        let bars: Vec<(String, f64)> = (0..5).map(|i| (format!("c{i}"), i as f64 + 1.0)).collect();
        let b = Chart::bars("sizes", "cluster", "rows", &bars).unwrap();
        assert_eq!(b.svg.matches("<rect").count(), 1 + 5);
        assert!(b.svg.contains(">\nc3\n<"), "few bars get their labels");
    }
}
