//! Results: one JSON line per run of a workload (`<server>.jsonl`, a
//! header line first), and from every such file present the Markdown
//! report (`benchmarks.md`: medians, speed relative to bucketfs, requests
//! and bytes from the emulator's counters, the targets of issue 13 with
//! pass or short) and the data of its chart (`ratios.json`, drawn into
//! `ratios.png` by `chart.py` where matplotlib is installed).

use super::server::Counters;
use super::workloads::{Measure, Sizes, Target, Unit, Workload};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Columns of the tables, in order.
pub const TARGETS: [&str; 4] = ["direct", "bucketfs", "s3fs", "rclone"];

/// The JSON line of one run.
pub fn record(
    server: &str,
    w: &Workload,
    target: Target,
    round: u64,
    result: &Result<Measure, String>,
) -> Value {
    let mut line = json!({
        "kind": "result",
        "server": server,
        "workload": w.id,
        "title": w.title,
        "unit": w.unit.label(),
        "target": target.name(),
        "round": round,
        "count": w.count,
    });
    match result {
        Ok(m) => {
            line["ok"] = json!(true);
            line["value"] = json!(m.value);
            line["seconds"] = json!(m.seconds);
            if let Some(cpu) = m.daemon_cpu {
                line["daemon_cpu"] = json!(cpu);
            }
            if let Some(counters) = &m.counters {
                line["requests"] = counters_json(counters);
            }
        }
        Err(e) => {
            line["ok"] = json!(false);
            line["error"] = json!(e);
        }
    }
    line
}

fn counters_json(counters: &Counters) -> Value {
    let ops: serde_json::Map<String, Value> = counters
        .iter()
        .map(|(op, c)| {
            (
                op.clone(),
                json!({"requests": c.requests, "bytes_in": c.bytes_in, "bytes_out": c.bytes_out}),
            )
        })
        .collect();
    Value::Object(ops)
}

/// The header line of a server's results.
pub fn header(
    server: &str,
    command: &str,
    rounds: u64,
    sizes: &Sizes,
    skipped: &[(String, String)],
) -> Value {
    json!({
        "kind": "run",
        "server": server,
        "date": date(),
        "machine": machine(),
        "command": command,
        "rounds": rounds,
        "sizes": format!("{sizes:?}"),
        "skipped": skipped.iter().map(|(what, why)| json!({"what": what, "why": why})).collect::<Vec<_>>(),
    })
}

fn date() -> String {
    command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default()
}

fn command_line(program: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(text.lines().next().unwrap_or("").trim().to_string())
}

/// CPU, cores, memory, kernel, and the peers' and bucketfs's versions.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.trim().trim_end_matches(" kB").parse::<f64>().ok())
        .map_or(0.0, |kb| kb / (1 << 20) as f64);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut versions = vec![format!(
        "bucketfs {} ({})",
        env!("CARGO_PKG_VERSION"),
        command_line(
            "git",
            &[
                "-C",
                env!("CARGO_MANIFEST_DIR"),
                "rev-parse",
                "--short",
                "HEAD"
            ]
        )
        .unwrap_or_default()
    )];
    versions.extend(command_line("s3fs", &["--version"]).filter(|v| !v.is_empty()));
    versions.extend(command_line("rclone", &["version"]).filter(|v| !v.is_empty()));
    format!(
        "{cpu}, {cores} cores, {mem_gib:.0} GiB, Linux {}; {}",
        kernel.trim(),
        versions.join(", ")
    )
}

/// Every result line of `dir/*.jsonl`, by server, with its header.
fn load(dir: &Path) -> BTreeMap<String, (Value, Vec<Value>)> {
    let mut servers = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let mut lines = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok());
        let Some(head) = lines.next() else { continue };
        let name = head["server"].as_str().unwrap_or("?").to_string();
        servers.insert(name, (head, lines.collect()));
    }
    servers
}

/// Median of the successful runs of one (workload, target).
#[derive(Clone, Debug)]
struct Cell {
    value: f64,
    unit: String,
    /// The counters of the run whose figure is the median.
    requests: Option<Value>,
    daemon_cpu: Option<f64>,
    runs: usize,
    failures: Vec<String>,
    /// Files, objects or appends of the workload.
    count: f64,
}

impl Cell {
    fn total_requests(&self) -> Option<u64> {
        let ops = self.requests.as_ref()?.as_object()?;
        Some(
            ops.values()
                .map(|c| c["requests"].as_u64().unwrap_or(0))
                .sum(),
        )
    }

    fn bytes(&self, field: &str) -> Option<u64> {
        let ops = self.requests.as_ref()?.as_object()?;
        Some(ops.values().map(|c| c[field].as_u64().unwrap_or(0)).sum())
    }

    /// Speed relative to `base`: above 1 is faster.
    fn speed_vs(&self, base: &Cell) -> f64 {
        if higher_is_better(&self.unit) {
            self.value / base.value
        } else {
            base.value / self.value
        }
    }
}

fn higher_is_better(unit: &str) -> bool {
    [Unit::MibPerSec, Unit::Iops]
        .iter()
        .any(|u| u.label() == unit)
}

/// Workloads in run order, each with its title and cells by target.
type Table = Vec<(String, String, BTreeMap<String, Cell>)>;

fn table(lines: &[Value]) -> Table {
    let mut table: Table = Vec::new();
    let mut samples: BTreeMap<(String, String), Vec<&Value>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l["kind"] == "result") {
        let workload = line["workload"].as_str().unwrap_or("?").to_string();
        if !table.iter().any(|(id, _, _)| *id == workload) {
            let title = line["title"].as_str().unwrap_or("?").to_string();
            table.push((workload.clone(), title, BTreeMap::new()));
        }
        let target = line["target"].as_str().unwrap_or("?").to_string();
        samples.entry((workload, target)).or_default().push(line);
    }
    for ((workload, target), runs) in samples {
        let failures: Vec<String> = runs
            .iter()
            .filter(|l| l["ok"] != true)
            .map(|l| {
                let error = l["error"].as_str().unwrap_or("?");
                // The table keeps the reason, the JSON line the log too.
                let reason = error.split("; the daemon's last log lines").next();
                reason
                    .unwrap_or(error)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect();
        let mut ok: Vec<&&Value> = runs.iter().filter(|l| l["ok"] == true).collect();
        let unit = runs[0]["unit"].as_str().unwrap_or("").to_string();
        let count = runs[0]["count"].as_f64().unwrap_or(f64::NAN);
        let cell = if ok.is_empty() {
            Cell {
                value: f64::NAN,
                unit,
                requests: None,
                daemon_cpu: None,
                runs: 0,
                failures,
                count,
            }
        } else {
            ok.sort_by(|a, b| {
                a["value"]
                    .as_f64()
                    .partial_cmp(&b["value"].as_f64())
                    .unwrap()
            });
            let mid = ok[ok.len() / 2];
            Cell {
                value: mid["value"].as_f64().unwrap_or(f64::NAN),
                unit,
                requests: mid.get("requests").cloned(),
                daemon_cpu: mid["daemon_cpu"].as_f64(),
                runs: ok.len(),
                failures,
                count,
            }
        };
        if let Some(row) = table.iter_mut().find(|(id, _, _)| *id == workload) {
            row.2.insert(target, cell);
        }
    }
    table
}

fn figure(cell: &Cell) -> String {
    match cell.unit.as_str() {
        "ms" => format!("{:.1} ms", cell.value),
        "s" => format!("{:.2} s", cell.value),
        "MiB/s" => format!("{:.0} MiB/s", cell.value),
        _ => format!("{:.0} {}", cell.value, cell.unit),
    }
}

/// One check of issue 13's targets.
#[derive(Clone, Debug)]
pub struct Check {
    pub server: String,
    pub target: String,
    pub pass: bool,
    pub detail: String,
    /// A request-count target: deterministic, so the smoke test enforces it.
    pub deterministic: bool,
}

fn checks(server: &str, table: &Table) -> Vec<Check> {
    let mut out = Vec::new();
    let mut check = |target: String, pass: bool, detail: String, deterministic: bool| {
        out.push(Check {
            server: server.to_string(),
            target,
            pass,
            detail,
            deterministic,
        })
    };
    for (id, _, cells) in table {
        let Some(ours) = cells.get("bucketfs").filter(|c| c.runs > 0) else {
            continue;
        };
        let direct = cells.get("direct").filter(|c| c.runs > 0);
        let against = |d: &Cell| {
            let ratio = ours.value / d.value;
            format!("{} vs {} ({ratio:.2}x)", figure(ours), figure(d))
        };
        match (id.as_str(), direct) {
            ("seq_read" | "seq_write", Some(d)) => check(
                format!("{id}: >= 0.9x the direct client"),
                ours.value >= 0.9 * d.value,
                against(d),
                false,
            ),
            ("ttfb", Some(d)) => check(
                "ttfb: <= direct + 5 ms".into(),
                ours.value <= d.value + 5.0,
                format!("{} vs {}", figure(ours), figure(d)),
                false,
            ),
            ("create_1" | "create_8", Some(d)) => check(
                format!("{id}: <= 1.2x the direct client's time"),
                ours.value <= 1.2 * d.value,
                against(d),
                false,
            ),
            _ => {}
        }
        let files = ours.count;
        if let (true, Some(requests)) = (id.starts_with("create_"), ours.total_requests()) {
            let per_file = requests as f64 / files;
            check(
                format!("{id}: <= 1.1 requests per file"),
                per_file <= 1.1,
                format!("{requests} requests for {files} files ({per_file:.2} a file)"),
                true,
            );
        }
        if let (true, Some(requests)) = (id.starts_with("ls_"), ours.total_requests()) {
            let limit = (files / 1000.0).ceil() as u64 + 2;
            check(
                format!("{id}: <= {limit} requests (one LIST a page, plus 2)"),
                requests <= limit,
                format!("{requests} requests for {files} objects"),
                true,
            );
        }
        if let ("append", Some(uploaded)) = (id.as_str(), ours.bytes("bytes_in")) {
            let appended = files * 4096.0;
            check(
                "append: uploads <= 1.1x the appended bytes".into(),
                uploaded as f64 <= 1.1 * appended,
                format!(
                    "{uploaded} bytes uploaded for {appended} appended ({:.1}x)",
                    uploaded as f64 / appended
                ),
                true,
            );
        }
        let peers: Vec<(&String, &Cell)> = cells
            .iter()
            .filter(|(t, c)| !matches!(t.as_str(), "bucketfs" | "direct") && c.runs > 0)
            .collect();
        if id == "mv_dir" && !peers.is_empty() {
            let best = peers
                .iter()
                .map(|(_, c)| c.value)
                .fold(f64::INFINITY, f64::min);
            check(
                "mv_dir: <= the best peer's time".into(),
                ours.value <= best,
                format!("{} vs best peer {best:.2} s", figure(ours)),
                false,
            );
        }
        for (peer, cell) in peers {
            let speed = ours.speed_vs(cell);
            check(
                format!("{id}: not slower than {peer}"),
                speed >= 1.0,
                format!(
                    "{} vs {} ({speed:.2}x {peer}'s speed)",
                    figure(ours),
                    figure(cell)
                ),
                false,
            );
        }
    }
    out
}

/// Writes `dir/benchmarks.md` and `dir/ratios.json` from every
/// `dir/*.jsonl`, plus the analysis in `analysis` if given; returns the
/// checks of the targets.
pub fn write_report(dir: &Path, markdown: &Path, analysis: Option<&str>) -> Vec<Check> {
    let servers = load(dir);
    let mut md = String::new();
    let mut all_checks = Vec::new();
    let mut ratios = serde_json::Map::new();
    let rel = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let _ = writeln!(
        md,
        "# Benchmarks: bucketfs beside s3fs, rclone mount and a direct client\n"
    );
    let _ = writeln!(
        md,
        "Written by the harness (`benches/compare/`), do not edit by hand: run it again. \
         Each figure is the median of the rounds; \"x\" is speed relative to bucketfs \
         (above 1: faster than bucketfs). Every filesystem is mounted fresh and the page cache \
         dropped before each run; a run is timed until its result is complete on the server. \
         Raw results: [`{rel}/`]({rel}/) (JSON lines).\n"
    );
    for (server, (head, lines)) in &servers {
        let table = table(lines);
        let _ = writeln!(md, "## Server: {server}\n");
        let _ = writeln!(md, "* date: {}", head["date"].as_str().unwrap_or("?"));
        let _ = writeln!(md, "* machine: {}", head["machine"].as_str().unwrap_or("?"));
        let _ = writeln!(
            md,
            "* command: `{}`",
            head["command"].as_str().unwrap_or("?")
        );
        let _ = writeln!(md, "* rounds: {}", head["rounds"]);
        for skip in head["skipped"].as_array().into_iter().flatten() {
            let _ = writeln!(
                md,
                "* not run: {} ({})",
                skip["what"].as_str().unwrap_or("?"),
                skip["why"].as_str().unwrap_or("?")
            );
        }
        let columns: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| table.iter().any(|(_, _, cells)| cells.contains_key(*t)))
            .collect();
        let _ = writeln!(md, "\n| workload | {} |", columns.join(" | "));
        let _ = writeln!(md, "| --- |{}", " --- |".repeat(columns.len()));
        let mut chart_rows = Vec::new();
        for (id, title, cells) in &table {
            let ours = cells.get("bucketfs").filter(|c| c.runs > 0);
            let mut row = format!("| {title} |");
            let mut chart = serde_json::Map::new();
            for target in &columns {
                let text = match cells.get(*target) {
                    None => "–".to_string(),
                    Some(c) if c.runs == 0 => {
                        format!("failed: {}", c.failures.first().map_or("", |f| f.as_str()))
                    }
                    Some(c) => {
                        let mut text = figure(c);
                        if let (Some(base), false) = (ours, *target == "bucketfs") {
                            let speed = c.speed_vs(base);
                            let _ = write!(text, " ({speed:.2}x)");
                            chart.insert(target.to_string(), json!(speed));
                        }
                        if !c.failures.is_empty() {
                            let _ = write!(
                                text,
                                " ({} of {} runs failed)",
                                c.failures.len(),
                                c.failures.len() + c.runs
                            );
                        }
                        text
                    }
                };
                let _ = write!(row, " {} |", text.replace('|', "/"));
            }
            let _ = writeln!(md, "{row}");
            chart_rows.push(json!({"workload": id, "title": title, "speed": chart}));
        }
        ratios.insert(server.clone(), Value::Array(chart_rows));
        if table
            .iter()
            .any(|(_, _, cells)| cells.values().any(|c| c.requests.is_some()))
        {
            let _ = writeln!(
                md,
                "\n### Requests and bytes ({server}'s counters, median run)\n"
            );
            let _ = writeln!(
                md,
                "| workload | filesystem | requests by operation | uploaded | downloaded | daemon CPU |"
            );
            let _ = writeln!(md, "| --- | --- | --- | --- | --- | --- |");
            for (_, title, cells) in &table {
                for target in &columns {
                    let Some(cell) = cells.get(*target) else {
                        continue;
                    };
                    let Some(ops) = cell.requests.as_ref().and_then(Value::as_object) else {
                        continue;
                    };
                    let by_op: Vec<String> = ops
                        .iter()
                        .map(|(op, c)| format!("{op} {}", c["requests"]))
                        .collect();
                    let _ = writeln!(
                        md,
                        "| {title} | {target} | {} ({} in all) | {} | {} | {} |",
                        by_op.join(", "),
                        cell.total_requests().unwrap_or(0),
                        mib(cell.bytes("bytes_in").unwrap_or(0)),
                        mib(cell.bytes("bytes_out").unwrap_or(0)),
                        cell.daemon_cpu.map_or("–".into(), |c| format!("{c:.2} s")),
                    );
                }
            }
        }
        let checks = checks(server, &table);
        if !checks.is_empty() {
            let _ = writeln!(md, "\n### Targets ({server})\n");
            let _ = writeln!(md, "| target | result | figures |");
            let _ = writeln!(md, "| --- | --- | --- |");
            for c in &checks {
                let verdict = if c.pass { "pass" } else { "**short**" };
                let _ = writeln!(md, "| {} | {verdict} | {} |", c.target, c.detail);
            }
        }
        let _ = writeln!(md);
        all_checks.extend(checks);
    }
    let ratios_path = dir.join("ratios.json");
    let _ = std::fs::write(
        &ratios_path,
        serde_json::to_string_pretty(&Value::Object(ratios)).unwrap(),
    );
    let png = dir.join("ratios.png");
    match draw_chart(&ratios_path, &png) {
        Ok(()) => {
            let _ = writeln!(md, "![speed relative to bucketfs]({rel}/ratios.png)\n");
        }
        Err(why) => {
            eprintln!("chart not drawn: {why}");
            let _ = writeln!(md, "Chart not drawn on this run: {why}\n");
        }
    }
    if let Some(analysis) = analysis {
        md.push_str(analysis);
    }
    std::fs::write(markdown, md).unwrap_or_else(|e| panic!("writing {}: {e}", markdown.display()));
    all_checks
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Runs `chart.py` with the first Python that has matplotlib.
fn draw_chart(ratios: &Path, png: &Path) -> Result<(), String> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/compare/chart.py");
    for python in ["python3", "/usr/bin/python3"] {
        let has = std::process::Command::new(python)
            .args(["-c", "import matplotlib"])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !has {
            continue;
        }
        let status = std::process::Command::new(python)
            .arg(script)
            .arg(ratios)
            .arg(png)
            .status()
            .map_err(|e| format!("{python} {script}: {e}"))?;
        return if status.success() {
            Ok(())
        } else {
            Err(format!("{python} {script} failed ({status})"))
        };
    }
    Err(format!(
        "no Python with matplotlib (install it with `apt-get install python3-matplotlib` or `pip install matplotlib`, then run `python3 {script} {} {}`)",
        ratios.display(),
        png.display()
    ))
}
