//! Tables for people, JSON for scripts; every line to stdout goes through `outln!`/`out!`.

/// `println!` that ends the process quietly with status 0 when stdout is a closed pipe
/// (`kiln jobs logs ID | head -1`, `kiln ... | grep -q`), as Unix tools do, instead of
/// panicking with status 101.
macro_rules! outln {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` with `outln!`'s handling of a closed pipe.
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

/// Writes to stdout and flushes; a closed pipe ends the process (status 0), any other write
/// error ends it with a message (status 1).
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(err) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if err.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {err}");
        std::process::exit(1);
    }
}

/// [`write_stdout`]'s rule for a write that went wrong elsewhere (clap's `--help`): quiet
/// success for a closed pipe, else a message and failure.
pub fn stdout_failed(err: &std::io::Error) -> std::process::ExitCode {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("error: writing to stdout: {err}");
    std::process::ExitCode::FAILURE
}

use serde::Serialize;

use crate::args::OutputFormat;

/// Prints `value` as JSON, or as a table with `headers` and `rows`.
pub fn print<T: Serialize>(
    format: OutputFormat,
    value: &T,
    headers: &[&str],
    rows: Vec<Vec<String>>,
) {
    match format {
        OutputFormat::Json => {
            outln!("{}", serde_json::to_string_pretty(value).unwrap_or_default())
        }
        OutputFormat::Table => out!("{}", table(headers, &rows)),
    }
}

/// Left-aligned columns separated by two spaces.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  ", width = widths[i]));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// `-` for absent values.
pub fn opt<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "-".to_owned())
}

/// A bar counting bytes (an upload, a download) when `visible`, a hidden one otherwise.
pub fn byte_progress(total: u64, visible: bool) -> indicatif::ProgressBar {
    let progress =
        if visible { indicatif::ProgressBar::new(total) } else { indicatif::ProgressBar::hidden() };
    progress.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .expect("a valid template"),
    );
    progress
}

#[cfg(test)]
mod tests {
    use super::table;

    #[test]
    fn columns_align_to_the_widest_cell() {
        let out = table(
            &["ID", "NAME"],
            &[vec!["1".into(), "alpha".into()], vec!["100".into(), "b".into()]],
        );
        assert_eq!(out, "ID   NAME\n1    alpha\n100  b\n");
    }
}
