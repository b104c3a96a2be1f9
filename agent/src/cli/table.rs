//! Text tables as Consul prints them: `columnize` (ryanuber/columnize with Consul's defaults: two
//! spaces of glue, cells trimmed, the last cell of a row never padded) and Go's `text/tabwriter`
//! with a fixed padding (used by `kv get -detailed` and `catalog services -tags`).

fn width(s: &str) -> usize {
    s.chars().count()
}

/// ryanuber/columnize: every column but a row's last is padded to the widest cell plus two spaces.
pub(super) fn columnize(rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().map(|c| c.trim()).collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(width(c));
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(widths[i] - width(c) + 2));
            }
        }
        out.push('\n');
    }
    out.pop();
    out
}

/// Go's `tabwriter.NewWriter(w, 0, 2, padding, ' ', 0)` over rows whose cells were tab-separated:
/// each column but a row's last is padded to its widest cell plus `padding`.
pub(super) fn tabwrite(rows: &[Vec<String>], padding: usize) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for r in rows {
        for (i, c) in r.iter().enumerate().take(r.len().saturating_sub(1)) {
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(width(c));
        }
    }
    let mut out = String::new();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            out.push_str(c);
            if i + 1 < r.len() {
                out.push_str(&" ".repeat(widths[i] - width(c) + padding));
            }
        }
        out.push('\n');
    }
    out.pop();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(v: &[&[&str]]) -> Vec<Vec<String>> {
        v.iter().map(|r| r.iter().map(|c| c.to_string()).collect()).collect()
    }

    #[test]
    fn columnize_pads_all_but_the_last_cell() {
        let t = columnize(&rows(&[&["Node", "Address", "Status"], &["agent-one", "10.0.0.1:8301", "alive"]]));
        assert_eq!(t, "Node       Address        Status\nagent-one  10.0.0.1:8301  alive");
    }

    #[test]
    fn columnize_handles_short_rows_and_trims_cells() {
        let t = columnize(&rows(&[&["a", "b", "c"], &[" xx ", "y"]]));
        assert_eq!(t, "a   b  c\nxx  y");
    }

    #[test]
    fn tabwriter_pads_with_six() {
        let t = tabwrite(&rows(&[&["CreateIndex", "5"], &["Key", "foo"]]), 6);
        assert_eq!(t, "CreateIndex      5\nKey              foo");
    }
}
