//! The tally of records a reader left out, and what to do with a malformed one.
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// What a reader does with a record it cannot parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OnMalformed {
    /// Stop with an error naming the file and line.
    #[default]
    Error,
    /// Leave the record out and count it under the reason "malformed record".
    Skip,
}

/// How many records were left out, by reason, and where the first of each was.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Skipped {
    pub reasons: BTreeMap<String, usize>,
    pub first: BTreeMap<String, String>,
}

impl Skipped {
    /// Counts one record left out for `reason`; `location` says where (file and line).
    pub fn add(&mut self, reason: &str, location: String) {
        *self.reasons.entry(reason.to_string()).or_default() += 1;
        self.first.entry(reason.to_string()).or_insert(location);
    }

    pub fn total(&self) -> usize {
        self.reasons.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.reasons.is_empty()
    }
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return write!(f, "none skipped");
        }
        write!(f, "{} skipped (", self.total())?;
        for (i, (reason, n)) in self.reasons.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{n} {reason}")?;
            if let Some(location) = self.first.get(reason) {
                write!(f, ", first at {location}")?;
            }
        }
        write!(f, ")")
    }
}

/// A reader's result: the records kept, in file order, and the tally of those left out.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub records: Vec<T>,
    pub skipped: Skipped,
}

impl<T> Default for Loaded<T> {
    fn default() -> Self {
        Loaded { records: Vec::new(), skipped: Skipped::default() }
    }
}

pub(crate) const MALFORMED: &str = "malformed record";

impl<T> Loaded<T> {
    /// Keeps `record`, or applies the malformed-record policy to its error.
    pub(crate) fn push_or_skip(&mut self, record: anyhow::Result<T>, policy: OnMalformed) -> anyhow::Result<()> {
        match record {
            Ok(record) => self.records.push(record),
            Err(err) if policy == OnMalformed::Skip => self.skipped.add(MALFORMED, format!("{err:#}")),
            Err(err) => return Err(err),
        }
        Ok(())
    }
}
