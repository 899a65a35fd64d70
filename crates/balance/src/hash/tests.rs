use super::*;

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("backend-{i}")).collect()
}

fn table(names: &[String], size: u32) -> MaglevTable {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    MaglevTable::build(&refs, &vec![1; names.len()], size)
}

fn key_hashes(count: u64) -> Vec<u64> {
    (0..count)
        .map(|k| hash_bytes(0, format!("user-{k}").as_bytes()))
        .collect()
}

fn peak_over_mean(t: &MaglevTable, n: usize, keys: &[u64]) -> f64 {
    let mut counts = vec![0u64; n];
    for &k in keys {
        counts[t.lookup(k).unwrap()] += 1;
    }
    let mean = keys.len() as f64 / n as f64;
    *counts.iter().max().unwrap() as f64 / mean
}

#[test]
fn hash_is_stable_and_seeded() {
    // Fixed values: a changed hash would remap every key after an upgrade.
    assert_eq!(hash_bytes(0, b"abc"), hash_bytes(0, b"abc"));
    assert_ne!(hash_bytes(0, b"abc"), hash_bytes(1, b"abc"));
    assert_ne!(hash_bytes(0, b"abc"), hash_bytes(0, b"abd"));
}

#[test]
fn every_slot_is_filled_and_slots_are_shared_evenly() {
    let n = names(7);
    let t = table(&n, 65537);
    let mut per = vec![0usize; 7];
    for s in 0..t.len() as u64 {
        per[t.slot(s).unwrap()] += 1;
    }
    let (min, max) = (per.iter().min().unwrap(), per.iter().max().unwrap());
    assert!(max - min <= 1, "slot shares {per:?}");
}

#[test]
fn peak_to_mean_load_is_at_most_1_1_over_100k_keys() {
    let keys = key_hashes(100_000);
    for n in [5usize, 20] {
        let t = table(&names(n), 65537);
        let ratio = peak_over_mean(&t, n, &keys);
        assert!(ratio <= 1.1, "{n} backends: peak/mean {ratio}");
    }
}

#[test]
fn removing_a_backend_moves_about_one_nth_and_mostly_only_its_keys() {
    let keys = key_hashes(100_000);
    for n in [5usize, 20] {
        let all = names(n);
        let before = table(&all, 65537);
        let removed = n / 2;
        let rest: Vec<String> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != removed)
            .map(|(_, s)| s.clone())
            .collect();
        let after = table(&rest, 65537);
        let (mut moved, mut moved_foreign, mut owned) = (0u64, 0u64, 0u64);
        for &k in &keys {
            let b = &all[before.lookup(k).unwrap()];
            let a = &rest[after.lookup(k).unwrap()];
            if b == &all[removed] {
                owned += 1;
            }
            if a != b {
                moved += 1;
                if b != &all[removed] {
                    moved_foreign += 1;
                }
            }
        }
        let frac = moved as f64 / keys.len() as f64;
        let ideal = 1.0 / n as f64;
        assert!(
            frac >= ideal * 0.85 && frac <= ideal * 1.25,
            "{n}: moved {frac}, ideal {ideal}"
        );
        // Every key of the removed backend moved (it is gone); keys of the others nearly all stay.
        assert!(moved - moved_foreign == owned);
        let foreign = moved_foreign as f64 / (keys.len() as u64 - owned) as f64;
        assert!(
            foreign < 0.02,
            "{n}: {foreign} of other backends' keys moved"
        );
    }
}

#[test]
fn adding_a_backend_moves_about_one_in_n_plus_one_to_the_new_one() {
    let keys = key_hashes(100_000);
    for n in [5usize, 20] {
        let all = names(n + 1);
        let before = table(&all[..n], 65537);
        let after = table(&all, 65537);
        let (mut moved, mut to_new) = (0u64, 0u64);
        for &k in &keys {
            let b = &all[before.lookup(k).unwrap()];
            let a = &all[after.lookup(k).unwrap()];
            if a != b {
                moved += 1;
                if a == &all[n] {
                    to_new += 1;
                }
            }
        }
        let frac = moved as f64 / keys.len() as f64;
        let ideal = 1.0 / (n + 1) as f64;
        assert!(
            frac >= ideal * 0.85 && frac <= ideal * 1.25,
            "{n}+1: moved {frac}, ideal {ideal}"
        );
        assert!(
            (moved - to_new) as f64 / keys.len() as f64 <= 0.02,
            "{n}+1: {} keys moved between old backends",
            moved - to_new
        );
    }
}

#[test]
fn weights_skew_the_table_share() {
    let n = names(3);
    let refs: Vec<&str> = n.iter().map(String::as_str).collect();
    let t = MaglevTable::build(&refs, &[3, 1, 1], 65537);
    let mut per = [0usize; 3];
    for s in 0..t.len() as u64 {
        per[t.slot(s).unwrap()] += 1;
    }
    let share0 = per[0] as f64 / t.len() as f64;
    assert!((share0 - 0.6).abs() < 0.01, "share {share0}, {per:?}");
}

#[test]
fn empty_table_looks_up_nothing() {
    let t = MaglevTable::build(&[], &[], 251);
    assert!(t.is_empty());
    assert_eq!(t.lookup(42), None);
}

#[test]
fn a_size_that_is_not_a_prime_above_the_count_is_raised_to_one() {
    // 300 backends with a 256-slot request: must not loop forever and must fill every slot.
    let n = names(300);
    let t = table(&n, 256);
    assert_eq!(t.len(), 307);
    let mut seen = vec![false; 300];
    for s in 0..t.len() as u64 {
        seen[t.slot(s).unwrap()] = true;
    }
    assert!(seen.iter().all(|&x| x));
}
