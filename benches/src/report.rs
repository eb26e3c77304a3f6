//! The `ratios` table: its rows, as aligned text or as markdown (for README's performance
//! section and issue notes), with a header naming the date, the machine and the workload.

use std::time::SystemTime;

use crate::runner::Timing;
use crate::store::Op;

/// The machine a run measured on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// The CPU model from `/proc/cpuinfo`, when readable.
    pub cpu: Option<String>,
    pub os: &'static str,
    pub arch: &'static str,
}

impl Machine {
    pub fn detect() -> Self {
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu: std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|text| cpu_model(&text)),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        }
    }

    /// `2 cores, AMD EPYC 7B13, linux x86_64`.
    pub fn describe(&self) -> String {
        format!(
            "{} core{}, {}, {} {}",
            self.cores,
            if self.cores == 1 { "" } else { "s" },
            self.cpu.as_deref().unwrap_or("unknown CPU"),
            self.os,
            self.arch
        )
    }
}

/// The CPU model named in `/proc/cpuinfo` text (x86's `model name`, some ARM kernels'
/// `Hardware` or `Processor`, others' `cpu model`).
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    ["model name", "cpu model", "Hardware", "Processor"]
        .iter()
        .find_map(|field| {
            cpuinfo.lines().find_map(|line| {
                let (name, value) = line.split_once(':')?;
                (name.trim() == *field && !value.trim().is_empty())
                    .then(|| value.split_whitespace().collect::<Vec<_>>().join(" "))
            })
        })
}

/// `time` as `YYYY-MM-DD HH:MM UTC` (what `date -u '+%F %R UTC'` prints).
pub fn utc_date(time: SystemTime) -> String {
    let secs = match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The proleptic Gregorian date of `days` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// What the table's header says about the run.
#[derive(Clone, Debug)]
pub struct Header {
    pub date: String,
    pub machine: Machine,
    /// Preloaded keys of every workload.
    pub keys: usize,
    /// Operations per thread per timed run.
    pub ops: u64,
    pub rounds: usize,
    pub threads: Vec<usize>,
    /// How to run it again.
    pub command: String,
    /// A debug build (numbers meaningless).
    pub debug: bool,
}

/// One operation on one backend with some number of threads: our typed layer, our byte
/// layer and the raw engine, each the median of the rounds.
#[derive(Clone, Debug)]
pub struct Row {
    pub backend: &'static str,
    pub op: Op,
    pub threads: usize,
    pub raw_name: String,
    pub typed: Timing,
    pub bytes: Timing,
    pub raw: Timing,
}

impl Row {
    /// Aggregate throughput of our typed layer over the raw engine's.
    pub fn typed_ratio(&self) -> f64 {
        self.typed.ops_per_sec / self.raw.ops_per_sec
    }

    /// Aggregate throughput of our byte layer over the raw engine's.
    pub fn bytes_ratio(&self) -> f64 {
        self.bytes.ops_per_sec / self.raw.ops_per_sec
    }
}

const UNITS: &str =
    "ns/op is per thread (each thread's timed ns / its ops, mean over the threads); \
Mop/s is the aggregate throughput of all threads; ratio = aggregate throughput ours / raw \
(with 1 thread: raw ns / our ns). Threads share one backend instance (and one raw engine \
instance) and work on disjoint key groups, as two subtasks' operator threads in one process \
would.";

/// How the table is printed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Format {
    /// Aligned columns for a terminal.
    Text,
    /// A markdown table with a header paragraph.
    Markdown,
}

impl Format {
    /// The lines before the first row.
    pub fn header(self, h: &Header) -> String {
        let threads = h
            .threads
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let debug = if h.debug {
            " DEBUG BUILD: the numbers are not meaningful."
        } else {
            ""
        };
        let workload = format!(
            "{} preloaded u64 keys per workload, {} operations per thread per run, median of {} \
             round{}, threads {threads}.{debug}",
            thousands(h.keys as u64),
            thousands(h.ops),
            h.rounds,
            if h.rounds == 1 { "" } else { "s" },
        );
        match self {
            Format::Text => format!(
                "flowstate ratios, {}, {}\n{workload}\n{UNITS}\n{:<8} {:<18} {:>3} {:>10} {:>10} \
                 {:>10} {:<12} {:>9} {:>9} {:>9} {:>9}",
                h.date,
                h.machine.describe(),
                "backend",
                "op",
                "thr",
                "typed ns",
                "bytes ns",
                "raw ns",
                "raw",
                "typed/raw",
                "bytes/raw",
                "typed Mop/s",
                "raw Mop/s",
            ),
            Format::Markdown => format!(
                "`ratios` on {}, {}.\n{workload}\n\nCommand: `{}`\n\n{UNITS}\n\n\
                 | backend | op | threads | typed ns/op | bytes ns/op | raw ns/op | raw | \
                 typed / raw | bytes / raw | typed Mop/s | raw Mop/s |\n\
                 |---|---|--:|--:|--:|--:|---|--:|--:|--:|--:|",
                h.date,
                h.machine.describe(),
                h.command,
            ),
        }
    }

    /// One row.
    pub fn row(self, r: &Row) -> String {
        let mops = |t: &Timing| t.ops_per_sec / 1e6;
        match self {
            Format::Text => format!(
                "{:<8} {:<18} {:>3} {:>10.1} {:>10.1} {:>10.1} {:<12} {:>9.2} {:>9.2} {:>11.2} {:>9.2}",
                r.backend,
                r.op.name(),
                r.threads,
                r.typed.ns_per_op,
                r.bytes.ns_per_op,
                r.raw.ns_per_op,
                r.raw_name,
                r.typed_ratio(),
                r.bytes_ratio(),
                mops(&r.typed),
                mops(&r.raw),
            ),
            Format::Markdown => format!(
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                r.backend,
                r.op.name(),
                r.threads,
                r.typed.ns_per_op,
                r.bytes.ns_per_op,
                r.raw.ns_per_op,
                r.raw_name,
                r.typed_ratio(),
                r.bytes_ratio(),
                mops(&r.typed),
                mops(&r.raw),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates_format_like_date_u() {
        let at = |secs: u64| utc_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01 00:00 UTC");
        // date -u -d @951827696 '+%F %R UTC': a leap day.
        assert_eq!(at(951_827_696), "2000-02-29 12:34 UTC");
        assert_eq!(at(1_735_689_599), "2024-12-31 23:59 UTC");
        assert_eq!(at(1_767_225_600), "2026-01-01 00:00 UTC");
    }

    #[test]
    fn cpu_models_and_numbers_read_well() {
        let x86 = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)  CPU @ 2.20GHz\n";
        assert_eq!(
            cpu_model(x86).as_deref(),
            Some("Intel(R) Xeon(R) CPU @ 2.20GHz")
        );
        assert_eq!(
            cpu_model("Hardware\t: BCM2835\n").as_deref(),
            Some("BCM2835")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        let machine = Machine {
            cores: 2,
            cpu: None,
            os: "linux",
            arch: "x86_64",
        };
        assert_eq!(machine.describe(), "2 cores, unknown CPU, linux x86_64");
    }

    #[test]
    fn rows_print_ratios_of_aggregate_throughput() {
        let timing = |ns: f64, threads: f64| Timing {
            ns_per_op: ns,
            ops_per_sec: threads * 1e9 / ns,
        };
        let row = Row {
            backend: "heap",
            op: Op::MapGet,
            threads: 2,
            raw_name: "raw_dashmap".into(),
            typed: timing(200.0, 2.0),
            bytes: timing(150.0, 2.0),
            raw: timing(100.0, 2.0),
        };
        assert!((row.typed_ratio() - 0.5).abs() < 1e-9);
        assert_eq!(
            Format::Markdown.row(&row),
            "| heap | map_get | 2 | 200 | 150 | 100 | raw_dashmap | 0.50 | 0.67 | 10.00 | 20.00 |"
        );
        assert!(Format::Text.row(&row).contains("map_get"));
        let header = Header {
            date: "2026-01-01 00:00 UTC".into(),
            machine: Machine::detect(),
            keys: 500_000,
            ops: 1_000_000,
            rounds: 3,
            threads: vec![1, 2],
            command: "ratios --markdown".into(),
            debug: false,
        };
        let md = Format::Markdown.header(&header);
        assert!(
            md.contains("500,000 preloaded") && md.contains("`ratios --markdown`"),
            "{md}"
        );
        // Header and rows have the same number of columns.
        let columns = |line: &str| line.matches('|').count();
        let last = md.lines().last().unwrap();
        assert_eq!(columns(last), columns(&Format::Markdown.row(&row)));
        assert_eq!(Format::Text.header(&header).lines().count(), 4);
    }
}
