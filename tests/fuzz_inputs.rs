//! Property tests of every reader of outside input (issue 13): damaged real files and
//! generated ones must load or fail with an error naming the file (and the line or position
//! where the format has lines), never panic. `scripts/fuzz.sh` runs the same properties for
//! hours.
mod common;
mod fuzz {
    pub mod kit;
    mod configs;
    mod data;
    mod models;
    mod outputs;
    mod regressions;
}
