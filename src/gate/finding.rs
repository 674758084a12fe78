//! What one part of a claim found: the comparison a measured value must satisfy ([`Threshold`]),
//! the [`Finding`] and the named [`Part`] a gate reports, and how a number is printed in a verdict
//! ([`number`]). The rule that turns parts into a verdict is [`super::verdict::derive`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// A comparison a measured value must satisfy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cmp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "=")]
    Eq,
}

impl Cmp {
    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Ge => "≥",
            Cmp::Lt => "<",
            Cmp::Le => "≤",
            Cmp::Eq => "=",
        }
    }
}

/// `measured <op> value` is what the claim needs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub op: Cmp,
    pub value: f64,
}

impl Threshold {
    pub fn above(value: f64) -> Self {
        Threshold { op: Cmp::Gt, value }
    }
    pub fn at_least(value: f64) -> Self {
        Threshold { op: Cmp::Ge, value }
    }
    pub fn below(value: f64) -> Self {
        Threshold { op: Cmp::Lt, value }
    }
    pub fn at_most(value: f64) -> Self {
        Threshold { op: Cmp::Le, value }
    }
    pub fn equal(value: f64) -> Self {
        Threshold { op: Cmp::Eq, value }
    }

    /// Whether a finite `measured` satisfies the threshold (NaN never does).
    pub fn holds(&self, measured: f64) -> bool {
        match self.op {
            Cmp::Gt => measured > self.value,
            Cmp::Ge => measured >= self.value,
            Cmp::Lt => measured < self.value,
            Cmp::Le => measured <= self.value,
            Cmp::Eq => measured == self.value,
        }
    }

    /// The same comparison against another value (a known failure's guard).
    pub fn with_value(&self, value: f64) -> Self {
        Threshold { op: self.op, value }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), number(self.value))
    }
}

/// A number as a verdict prints it: integers without decimals, others with 4 significant digits.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    if v.abs() < 1e-3 {
        return format!("{v:.3e}");
    }
    let digits = (3 - v.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// What one part of a claim found on this trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// Checked, and it held.
    Held { measured: f64, threshold: Threshold },
    /// Checked, and it did not hold.
    NotHeld { measured: f64, threshold: Threshold },
    /// This backend cannot check this part at all (it has no way to produce the evidence).
    /// Never a PASS: the trial is INFO unless something else fails.
    NotChecked { reason: String },
    /// The part can be checked here but the trial produced nothing to check it with (every run
    /// failed, no event of the class, the check's own tool failed). A FAIL.
    NoData { reason: String },
    /// The part only reports: no threshold in the gate file, or one that cannot fail by
    /// construction. Never a PASS: the trial is INFO unless something else fails.
    Reported {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        measured: Option<f64>,
        note: String,
    },
}

impl Finding {
    /// `Held` or `NotHeld` by comparing `measured` with `threshold`; a non-finite value is
    /// `NoData` (a NaN median is not a measurement).
    pub fn compare(measured: f64, threshold: Threshold) -> Finding {
        if !measured.is_finite() {
            return Finding::NoData {
                reason: format!(
                    "the measured value is {measured}, not a number to compare {threshold}"
                ),
            };
        }
        if threshold.holds(measured) {
            Finding::Held {
                measured,
                threshold,
            }
        } else {
            Finding::NotHeld {
                measured,
                threshold,
            }
        }
    }
}

/// One part of a trial's claim and what was found for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Part {
    /// The part's name, as the gate kind lists it ([`super::GateKind::parts`]); known failures name it.
    pub name: String,
    #[serde(flatten)]
    pub finding: Finding,
    /// What was measured, in words (e.g. `median over 10 runs, 20 prompt tokens`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Part {
    pub fn new(name: &str, finding: Finding, detail: impl Into<String>) -> Part {
        Part {
            name: name.into(),
            finding,
            detail: detail.into(),
        }
    }
    /// A compared part: `measured` against `threshold`.
    pub fn compare(
        name: &str,
        measured: f64,
        threshold: Threshold,
        detail: impl Into<String>,
    ) -> Part {
        Part::new(name, Finding::compare(measured, threshold), detail)
    }
    pub fn not_checked(name: &str, reason: impl Into<String>) -> Part {
        Part::new(
            name,
            Finding::NotChecked {
                reason: reason.into(),
            },
            "",
        )
    }
    pub fn no_data(name: &str, reason: impl Into<String>) -> Part {
        Part::new(
            name,
            Finding::NoData {
                reason: reason.into(),
            },
            "",
        )
    }
    pub fn reported(name: &str, measured: Option<f64>, note: impl Into<String>) -> Part {
        Part::new(
            name,
            Finding::Reported {
                measured: measured.filter(|v| v.is_finite()),
                note: note.into(),
            },
            "",
        )
    }

    pub(crate) fn describe(&self) -> String {
        let detail = if self.detail.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.detail)
        };
        match &self.finding {
            Finding::Held {
                measured,
                threshold,
            } => format!("{} {} {threshold}{detail}", self.name, number(*measured)),
            Finding::NotHeld {
                measured,
                threshold,
            } => format!(
                "{} {}, needs {threshold}{detail}",
                self.name,
                number(*measured)
            ),
            Finding::NotChecked { reason } => {
                format!("{} not checked: {reason}{detail}", self.name)
            }
            Finding::NoData { reason } => format!("{} no data: {reason}{detail}", self.name),
            Finding::Reported { measured, note } => match measured {
                Some(m) => format!("{} {} (reported: {note}){detail}", self.name, number(*m)),
                None => format!("{} reported: {note}{detail}", self.name),
            },
        }
    }
}
