//! Charts drawn on the server as SVG: no script, nothing to vendor, and every label goes
//! through maud's escaping like the rest of the page. Sizes come from the `viewBox`, so the
//! chart scales with its container (CSS `width: 100%`) on any screen.

use super::i18n::Lang;
use maud::{Markup, html};

/// Width and height of the drawing space.
const W: f64 = 600.0;
const H: f64 = 160.0;
/// Margins for axis labels.
const LEFT: f64 = 44.0;
const BOTTOM: f64 = 22.0;

/// A line of % compliant per day (`(YYYY-MM-DD, percent)`, oldest first), with a title that
/// screen readers announce.
pub fn trend(points: &[(String, f64)], title: &str, lang: Lang) -> Markup {
    let plot_w = W - LEFT - 8.0;
    let plot_h = H - BOTTOM - 8.0;
    let x = |i: usize| {
        if points.len() <= 1 {
            LEFT + plot_w / 2.0
        } else {
            LEFT + plot_w * i as f64 / (points.len() - 1) as f64
        }
    };
    let y = |p: f64| 8.0 + plot_h * (1.0 - p.clamp(0.0, 100.0) / 100.0);
    let line: String = points
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("{:.1},{:.1}", x(i), y(*p)))
        .collect::<Vec<_>>()
        .join(" ");
    let last = points.last();
    let summary = match (points.first(), last) {
        (Some((d0, p0)), Some((d1, p1))) => format!(
            "{title}: {} {} → {} {}",
            lang.day(d0),
            lang.percent(*p0),
            lang.day(d1),
            lang.percent(*p1)
        ),
        _ => title.to_owned(),
    };
    html! {
        svg.trend viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(summary) {
            title { (summary) }
            @for pct in [0.0, 50.0, 100.0] {
                line.grid x1=(LEFT) x2=(W - 8.0) y1=(y(pct)) y2=(y(pct)) {}
                text.axis x=(LEFT - 6.0) y=(y(pct) + 4.0) text-anchor="end" { (format!("{pct:.0}%")) }
            }
            @if let (Some((d0, _)), Some((d1, _))) = (points.first(), last) {
                text.axis x=(LEFT) y=(H - 6.0) text-anchor="start" { (lang.day(d0)) }
                @if points.len() > 1 {
                    text.axis x=(W - 8.0) y=(H - 6.0) text-anchor="end" { (lang.day(d1)) }
                }
            }
            @if points.len() > 1 {
                polyline.line points=(line) {}
            }
            @for (i, (d, p)) in points.iter().enumerate() {
                circle.dot cx=(format!("{:.1}", x(i))) cy=(format!("{:.1}", y(*p))) r="2.5" {
                    title { (lang.day(d)) ": " (lang.percent(*p)) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_points_fall_inside_the_drawing() {
        let points = vec![
            ("2026-11-01".to_owned(), 50.0),
            ("2026-11-02".to_owned(), 100.0),
        ];
        let svg = trend(&points, "<script>alert(1)</script>", Lang::En).into_string();
        assert!(!svg.contains("<script>"), "{svg}");
        assert!(svg.contains("&lt;script&gt;"), "{svg}");
        assert!(svg.contains("points=\"44.0,73.0 592.0,8.0\""), "{svg}");
    }
}
