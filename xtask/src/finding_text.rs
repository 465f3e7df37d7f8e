//! How a finding reads in text: check's report prints it, and the errors that
//! quote findings (a layout that does not build) print it the same way. It
//! sits at the bottom, with the findings, so loading a host can use it.

use std::fmt::Write as _;

use layout::findings::Finding;
use toolbox::project::display_path;

pub fn render_finding(out: &mut String, finding: &Finding) {
    let place = match &finding.location {
        Some(location) if location.line > 0 => format!(
            " ({}:{}:{})",
            display_path(&location.file),
            location.line,
            location.column
        ),
        Some(location) => format!(" ({})", display_path(&location.file)),
        None => String::new(),
    };
    let path = if finding.path.segments().is_empty() {
        String::new()
    } else {
        format!(" {}", finding.path)
    };
    let _ = writeln!(out, "{}[{}]{path}{place}", finding.severity, finding.code);
    let _ = writeln!(out, "    {}", finding.message);
    if !finding.hint.is_empty() {
        let _ = writeln!(out, "    fix: {}", finding.hint);
    }
}
