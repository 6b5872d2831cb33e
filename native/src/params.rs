//! Chunker parameters and their validation.
//!
//! The limits are the `fastcdc::v2020` ones; v2020 (since fastcdc 5) also
//! needs even sizes, because its two-bytes-at-a-time scan halves them.

use fastcdc::v2020::{
    AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
};

/// FastCDC 2020 parameters, pinned per replica store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub min_size: usize,
    pub avg_size: usize,
    pub max_size: usize,
    pub normalization: u32,
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            min_size: 16 * 1024,
            avg_size: 64 * 1024,
            max_size: 256 * 1024,
            normalization: 1,
            seed: 0,
        }
    }
}

fn check_range(name: &str, value: usize, lo: usize, hi: usize) -> Result<(), String> {
    if value < lo || value > hi {
        return Err(format!("{name} must be between {lo} and {hi}, got {value}"));
    }
    if !value.is_multiple_of(2) {
        return Err(format!("{name} must be even, got {value}"));
    }
    Ok(())
}

impl Params {
    /// Checks every parameter; the error message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        check_range("min_size", self.min_size, MINIMUM_MIN, MINIMUM_MAX)?;
        check_range("avg_size", self.avg_size, AVERAGE_MIN, AVERAGE_MAX)?;
        check_range("max_size", self.max_size, MAXIMUM_MIN, MAXIMUM_MAX)?;
        if self.min_size > self.avg_size {
            return Err(format!(
                "min_size ({}) must not exceed avg_size ({})",
                self.min_size, self.avg_size
            ));
        }
        if self.avg_size > self.max_size {
            return Err(format!(
                "avg_size ({}) must not exceed max_size ({})",
                self.avg_size, self.max_size
            ));
        }
        if self.normalization > 3 {
            return Err(format!(
                "normalization must be 0, 1, 2 or 3, got {}",
                self.normalization
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(Params::default().validate().is_ok());
    }

    #[test]
    fn errors_name_the_parameter() {
        let p = Params {
            max_size: 1001,
            ..Params::default()
        };
        assert!(p.validate().unwrap_err().starts_with("max_size"));
        let p = Params {
            min_size: 128 * 1024,
            ..Params::default()
        };
        assert!(p.validate().unwrap_err().contains("min_size"));
        let p = Params {
            normalization: 4,
            ..Params::default()
        };
        assert!(p.validate().unwrap_err().starts_with("normalization"));
    }
}
