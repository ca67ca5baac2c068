//! Drawing `top`: the bus table, the selected bus's minute of rates, and its slots. Reads the
//! [`App`] only.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use super::app::{App, BusView, SlotKind, HISTORY};
use crate::inspect::bytes;

/// The mark before the selected bus (the screen test looks for it).
pub const SELECTED: &str = "> ";

pub fn draw(frame: &mut Frame, app: &App) {
    let area = frame.area();
    let bus_rows = (app.buses.len().max(1) as u16 + 3)
        .min(area.height / 2)
        .max(4);
    let [title, buses, detail, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(bus_rows),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(area);
    frame.render_widget(
        Paragraph::new(Line::from(vec![
            Span::styled("shmbus top", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(format!(
                "  {}  {} bus{}, refreshed every second",
                app.dir.display(),
                app.buses.len(),
                if app.buses.len() == 1 { "" } else { "es" }
            )),
        ])),
        title,
    );
    draw_buses(frame, app, buses);
    match app.selected_bus() {
        Some(b) => draw_detail(frame, b, detail),
        None => {
            let why = match &app.dir_error {
                Some(e) => format!("cannot read {}: {e}", app.dir.display()),
                None => format!("no buses in {} (yet)", app.dir.display()),
            };
            frame.render_widget(Paragraph::new(why), detail);
        }
    }
    frame.render_widget(
        Paragraph::new(
            "↑/↓ select   q quit   (MiB/s: ring bytes, records and headers; 1 MiB = 2^20 B)",
        )
        .style(Style::new().add_modifier(Modifier::DIM)),
        help,
    );
}

/// The last minute as block characters, one a sample (or the maximum of a few, to fit).
fn text_sparkline(history: &std::collections::VecDeque<u64>, width: usize) -> String {
    const BARS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    if width == 0 {
        return String::new();
    }
    let per = HISTORY.div_ceil(width).max(1);
    let samples: Vec<u64> = history.iter().copied().collect();
    let buckets: Vec<u64> = samples
        .chunks(per)
        .map(|c| c.iter().copied().max().unwrap_or(0))
        .collect();
    let max = buckets.iter().copied().max().unwrap_or(0);
    let mut s: String = buckets
        .iter()
        .map(|&v| {
            if max == 0 || v == 0 {
                BARS[0]
            } else {
                BARS[(1 + v * 7 / max) as usize]
            }
        })
        .collect();
    // Right-aligned: the newest sample at the right edge.
    let len = s.chars().count();
    if len < width {
        s = " ".repeat(width - len) + &s;
    }
    s
}

fn rate_cells(b: &BusView) -> (String, String) {
    match (b.error.is_some(), b.rate) {
        (true, _) => ("-".into(), "-".into()),
        (false, None) => ("…".into(), "…".into()),
        (false, Some((m, mb))) => (
            format!("{m:.0}"),
            if mb < 10.0 {
                format!("{mb:.3}")
            } else {
                format!("{mb:.1}")
            },
        ),
    }
}

const SPARK_WIDTH: usize = 30;

fn draw_buses(frame: &mut Frame, app: &App, area: Rect) {
    let header = header_row(
        &[
            "NAME",
            "MODE",
            "TYPE",
            "SUBS",
            "PRODS",
            "MSGS/S",
            "MIB/S",
            "LAST MINUTE",
            "STATUS",
        ],
        &[3, 4, 5, 6],
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = app.buses.iter().map(|b| {
        let (msgs, mb) = rate_cells(b);
        let (mode, ty, subs, prods) = match &b.stats {
            Some(st) if b.error.is_none() => (
                st.config.mode.to_string(),
                match &st.message_type {
                    Ok(Some(t)) => t.short(),
                    Ok(None) => "-".into(),
                    Err(_) => "corrupt".into(),
                },
                fmt_live(b.summary.live_subscribers, b.summary.dead_subscribers),
                fmt_live(b.summary.live_producers, b.summary.dead_producers),
            ),
            _ => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        Row::new([
            Cell::from(b.name.clone()),
            Cell::from(mode),
            Cell::from(ty),
            Cell::from(Line::from(subs).right_aligned()),
            Cell::from(Line::from(prods).right_aligned()),
            Cell::from(Line::from(msgs).right_aligned()),
            Cell::from(Line::from(mb).right_aligned()),
            Cell::from(text_sparkline(&b.history, SPARK_WIDTH)),
            Cell::from(b.status()),
        ])
    });
    let name_width = app
        .buses
        .iter()
        .map(|b| b.name.chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 32) as u16;
    let table = Table::new(
        rows,
        [
            Constraint::Length(name_width),
            Constraint::Length(8),
            Constraint::Length(4),
            Constraint::Length(6),
            Constraint::Length(6),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(SPARK_WIDTH as u16),
            Constraint::Min(10),
        ],
    )
    .header(header)
    .block(Block::new().borders(Borders::TOP | Borders::BOTTOM))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
    .highlight_symbol(SELECTED);
    let mut state =
        TableState::new().with_selected((!app.buses.is_empty()).then_some(app.selected));
    frame.render_stateful_widget(table, area, &mut state);
}

/// A header row whose `right` columns (numbers) are aligned as their cells are.
fn header_row(names: &[&'static str], right: &[usize]) -> Row<'static> {
    Row::new(names.iter().enumerate().map(|(i, &n)| {
        if right.contains(&i) {
            Cell::from(Line::from(n).right_aligned())
        } else {
            Cell::from(n)
        }
    }))
}

/// "3" live, or "3+1!" with a dead slot not yet evicted.
fn fmt_live(live: usize, dead: usize) -> String {
    if dead == 0 {
        live.to_string()
    } else {
        format!("{live}+{dead}!")
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

fn draw_detail(frame: &mut Frame, b: &BusView, area: Rect) {
    let title = match &b.stats {
        Some(st) if b.error.is_none() => format!(
            " {}: {} mode, capacity {}, published {} messages ({}), retained {} ",
            b.name,
            st.config.mode,
            bytes(st.config.capacity),
            b.summary.published_messages,
            bytes(b.summary.published_bytes),
            st.tail_seq.saturating_sub(st.head_seq),
        ),
        _ => format!(" {} ", b.name),
    };
    let block = Block::new().borders(Borders::TOP).title(title);
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if let Some(e) = &b.error {
        frame.render_widget(Paragraph::new(format!("{}: {e}", b.path.display())), inner);
        return;
    }
    let [spark_label, spark, slots] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(3),
        Constraint::Min(0),
    ])
    .areas(inner);
    let max = b.history.iter().copied().max().unwrap_or(0);
    frame.render_widget(
        Paragraph::new(format!(
            "msgs/s over the last minute (peak {max}, now {})",
            rate_cells(b).0
        )),
        spark_label,
    );
    let data: Vec<u64> = b.history.iter().copied().collect();
    // Right-aligned, like the table's: the newest sample at the right edge.
    let width = (data.len() as u16).min(spark.width);
    let spark = Rect {
        x: spark.x + spark.width - width,
        width,
        ..spark
    };
    frame.render_widget(
        Sparkline::default().data(&data[data.len() - width as usize..]),
        spark,
    );
    let header = header_row(
        &[
            "SLOT",
            "PID",
            "STATE",
            "LAG MSGS",
            "LAG BYTES",
            "MSGS/S",
            "TOTAL",
            "LOST",
            "UNBLOCKED",
            "ABANDONED",
        ],
        &[1, 3, 4, 5, 6, 7, 8, 9],
    )
    .style(Style::new().add_modifier(Modifier::BOLD));
    let rows = b.slots.iter().map(|s| {
        let kind = match s.kind {
            SlotKind::Subscriber => "sub",
            SlotKind::Producer => "prod",
        };
        let r = |s: String| Cell::from(Line::from(s).right_aligned());
        let row = Row::new([
            Cell::from(format!("{kind} {}", s.index)),
            r(s.pid.clone()),
            Cell::from(if s.alive { "alive" } else { "DEAD" }),
            r(opt(s.lag_messages)),
            r(s.lag_bytes.map_or_else(|| "-".into(), bytes)),
            r(s.rate.map_or_else(|| "…".into(), |v| format!("{v:.0}"))),
            r(s.total.to_string()),
            r(opt(s.lost)),
            r(opt(s.unblocked)),
            r(opt(s.abandoned)),
        ]);
        if s.alive {
            row
        } else {
            row.style(Style::new().add_modifier(Modifier::BOLD))
        }
    });
    let widths = [
        Constraint::Length(8),
        // "12 (foreign)": a pid in another PID namespace (see pids.rs).
        Constraint::Length(12),
        Constraint::Length(5),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(9),
        Constraint::Length(12),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
    ];
    let empty = b.slots.is_empty();
    frame.render_widget(Table::new(rows, widths).header(header), slots);
    if empty {
        let below = Rect {
            y: slots.y.saturating_add(1),
            height: slots.height.saturating_sub(1),
            ..slots
        };
        frame.render_widget(Paragraph::new("no subscribers, no producers"), below);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_sparkline_scales_to_the_peak_and_keeps_the_newest_at_the_right() {
        let h: std::collections::VecDeque<u64> = [0, 10, 20, 40].into_iter().collect();
        let s = text_sparkline(&h, 30);
        assert_eq!(s.chars().count(), 30);
        assert!(s.ends_with("█"), "{s:?}");
        let h: std::collections::VecDeque<u64> = (0..60).collect();
        assert_eq!(text_sparkline(&h, 30).chars().count(), 30);
        assert_eq!(text_sparkline(&Default::default(), 5), "     ");
    }
}
