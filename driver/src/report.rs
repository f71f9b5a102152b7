//! What reports keep: counts per outcome and a bounded list of the failures, never one record
//! per entry, so a transfer of millions of files holds no per-file state once each file has
//! ended (its detail went to the per-file callback).

/// How many failed entries a report lists by name; later ones are only counted.
pub const MAX_LISTED_FAILURES: usize = 100;

/// Adds `failure` to `list` unless it holds [`MAX_LISTED_FAILURES`] already.
pub(crate) fn list_failure<T>(list: &mut Vec<T>, failure: T) {
    if list.len() < MAX_LISTED_FAILURES {
        list.push(failure);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_stops_growing_at_its_bound() {
        let mut list = Vec::new();
        for i in 0..MAX_LISTED_FAILURES + 10 {
            list_failure(&mut list, i);
        }
        assert_eq!(list.len(), MAX_LISTED_FAILURES);
        assert_eq!(list[0], 0, "the first failures are kept");
        assert_eq!(list[MAX_LISTED_FAILURES - 1], MAX_LISTED_FAILURES - 1);
    }
}
