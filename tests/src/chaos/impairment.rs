//! What a chaos WAN does to the datagrams of one direction, as a pure model without sockets:
//! the relay ([`crate::chaos`]) feeds it what arrives and sends what it hands back when due.
//!
//! Kept apart from the sockets so every impairment is unit-tested on its own, deterministically
//! (the clock is a parameter, the randomness a seeded [`XorShift`]).
//!
//! Order per datagram: a loss burst in progress (or starting) drops it, then random loss, then
//! corruption (so a corrupted datagram is never also dropped here: every one reaches the
//! receiver), then duplication, then reordering, then delay. Jitter alone never reorders: a
//! datagram is never scheduled before the one admitted ahead of it (as on a real link, whose
//! queue keeps order), so reordering happens only where [`Impairment::reorder`] says.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// A small seeded PRNG (xorshift64*). Not cryptographic; only decides the fate of datagrams.
/// The `rand` crate is not in the workspace's tree and this needs no more than this.
#[derive(Debug, Clone)]
pub struct XorShift {
    state: u64,
}

impl XorShift {
    /// The generator for `seed` (any value; 0 is mapped to a non-zero state).
    pub fn new(seed: u64) -> XorShift {
        // splitmix64 of the seed: neighbouring seeds give unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        XorShift { state: z | 1 }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A uniform value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
    pub fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }

    /// A uniform value in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// A loss burst: with `probability` per datagram a burst starts that drops it and the next
/// `length - 1` datagrams in a row (a line outage, a congested carrier queue).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Chance per datagram (outside a burst) that a burst starts with it.
    pub probability: f64,
    /// Datagrams dropped in a row by one burst.
    pub length: u32,
}

/// The impairments of one direction. The default passes everything unchanged at once.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    /// Chance that a datagram is lost (independently of the others).
    pub loss: f64,
    /// Loss in bursts, on top of [`Impairment::loss`].
    pub burst: Option<Burst>,
    /// Chance that a datagram is delivered twice.
    pub duplicate: f64,
    /// Chance that a datagram is held back behind the next [`Impairment::reorder_gap`] ones.
    pub reorder: f64,
    /// How many later datagrams overtake one that is held back (at least 1).
    pub reorder_gap: u32,
    /// Chance that one byte of a datagram is flipped (XOR with a non-zero value).
    pub corrupt: f64,
    /// Delay added to every datagram.
    pub delay: Duration,
    /// The delay varies uniformly by up to this much either way (never below zero).
    pub jitter: Duration,
}

impl Impairment {
    /// No impairment at all.
    pub fn none() -> Impairment {
        Impairment::default()
    }
}

/// How long a held-back datagram waits for the datagrams meant to overtake it: a link that
/// goes quiet (keepalives only) still delivers it.
pub const MAX_HOLD: Duration = Duration::from_millis(50);

/// What one direction did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DirectionCounts {
    /// Datagrams that arrived.
    pub received: u64,
    /// Datagrams handed on (duplicates included).
    pub forwarded: u64,
    /// Lost at random.
    pub dropped: u64,
    /// Lost in bursts.
    pub burst_dropped: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Delivered after at least one datagram that arrived later.
    pub reordered: u64,
    /// Delivered with a byte flipped.
    pub corrupted: u64,
}

impl DirectionCounts {
    /// Every datagram this direction lost (random and in bursts).
    pub fn lost(&self) -> u64 {
        self.dropped + self.burst_dropped
    }

    /// The sum of two directions' (or two relays') counts.
    pub fn plus(&self, other: &DirectionCounts) -> DirectionCounts {
        DirectionCounts {
            received: self.received + other.received,
            forwarded: self.forwarded + other.forwarded,
            dropped: self.dropped + other.dropped,
            burst_dropped: self.burst_dropped + other.burst_dropped,
            duplicated: self.duplicated + other.duplicated,
            reordered: self.reordered + other.reordered,
            corrupted: self.corrupted + other.corrupted,
        }
    }

    /// Counts since `earlier` (each field's difference).
    pub fn since(&self, earlier: &DirectionCounts) -> DirectionCounts {
        DirectionCounts {
            received: self.received - earlier.received,
            forwarded: self.forwarded - earlier.forwarded,
            dropped: self.dropped - earlier.dropped,
            burst_dropped: self.burst_dropped - earlier.burst_dropped,
            duplicated: self.duplicated - earlier.duplicated,
            reordered: self.reordered - earlier.reordered,
            corrupted: self.corrupted - earlier.corrupted,
        }
    }
}

/// A datagram waiting behind later ones.
struct Held<T> {
    to: T,
    datagram: Vec<u8>,
    copies: u32,
    /// Later datagrams still to overtake it.
    behind: u32,
    overtaken: bool,
    release_at: Instant,
}

/// One direction of the chaos WAN: admits datagrams (each with where it goes, `T`) and hands
/// them back, impaired, when they are due.
pub struct Impairer<T> {
    impairment: Impairment,
    rng: XorShift,
    burst_left: u32,
    held: Vec<Held<T>>,
    /// Scheduled datagrams, in delivery order (times never decrease).
    scheduled: VecDeque<(Instant, T, Vec<u8>)>,
    last_due: Option<Instant>,
    counts: DirectionCounts,
}

impl<T: Clone> Impairer<T> {
    /// A direction with `impairment`, its randomness from `seed`.
    pub fn new(impairment: Impairment, seed: u64) -> Impairer<T> {
        Impairer {
            impairment,
            rng: XorShift::new(seed),
            burst_left: 0,
            held: Vec::new(),
            scheduled: VecDeque::new(),
            last_due: None,
            counts: DirectionCounts::default(),
        }
    }

    /// Changes the impairment from now on (what is already scheduled keeps its time).
    pub fn set(&mut self, impairment: Impairment) {
        self.impairment = impairment;
        if impairment.burst.is_none() {
            self.burst_left = 0;
        }
    }

    /// What this direction did so far.
    pub fn counts(&self) -> DirectionCounts {
        self.counts
    }

    /// A datagram for `to` arrived at `now`.
    pub fn admit(&mut self, now: Instant, to: T, mut datagram: Vec<u8>) {
        let imp = self.impairment;
        self.counts.received += 1;
        if self.burst_left > 0 {
            self.burst_left -= 1;
            self.counts.burst_dropped += 1;
            return;
        }
        if let Some(burst) = imp.burst {
            if burst.length > 0 && self.rng.chance(burst.probability) {
                self.burst_left = burst.length - 1;
                self.counts.burst_dropped += 1;
                return;
            }
        }
        if self.rng.chance(imp.loss) {
            self.counts.dropped += 1;
            return;
        }
        if !datagram.is_empty() && self.rng.chance(imp.corrupt) {
            let at = self.rng.below(datagram.len() as u64) as usize;
            let flip = 1 + self.rng.below(255) as u8;
            datagram[at] ^= flip;
            self.counts.corrupted += 1;
        }
        let copies = if self.rng.chance(imp.duplicate) { 2 } else { 1 };
        if self.rng.chance(imp.reorder) {
            self.held.push(Held {
                to,
                datagram,
                copies,
                behind: imp.reorder_gap.max(1),
                overtaken: false,
                release_at: now + MAX_HOLD,
            });
            return;
        }
        let due = self.due_time(now);
        self.schedule(due, to, datagram, copies);
        // The held-back datagrams this one overtook; those it was the last for follow it.
        let mut i = 0;
        while i < self.held.len() {
            let held = &mut self.held[i];
            held.overtaken = true;
            held.behind -= 1;
            if held.behind == 0 {
                let held = self.held.remove(i);
                self.release(due, held);
            } else {
                i += 1;
            }
        }
    }

    /// When the next datagram is due or a held one must be released, if any is waiting.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let scheduled = self.scheduled.front().map(|(at, _, _)| *at);
        let held = self.held.iter().map(|h| h.release_at).min();
        match (scheduled, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The datagrams due at `now`, in order; held ones whose wait is over are released first.
    pub fn due(&mut self, now: Instant) -> Vec<(T, Vec<u8>)> {
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].release_at <= now {
                let held = self.held.remove(i);
                let due = self.due_time(now);
                self.release(due, held);
            } else {
                i += 1;
            }
        }
        let mut out = Vec::new();
        while let Some((at, _, _)) = self.scheduled.front() {
            if *at > now {
                break;
            }
            if let Some((_, to, datagram)) = self.scheduled.pop_front() {
                out.push((to, datagram));
            }
        }
        self.counts.forwarded += out.len() as u64;
        out
    }

    /// The delivery time of a datagram arriving at `now`: the delay with jitter, but never
    /// before the datagram ahead of it.
    fn due_time(&mut self, now: Instant) -> Instant {
        let imp = self.impairment;
        let jitter_ms = imp.jitter.as_millis() as u64;
        let mut delay = imp.delay;
        if jitter_ms > 0 {
            let offset = self.rng.below(2 * jitter_ms + 1);
            delay = (delay + Duration::from_millis(offset))
                .saturating_sub(Duration::from_millis(jitter_ms));
        }
        let due = now + delay;
        let due = self.last_due.map_or(due, |last| due.max(last));
        self.last_due = Some(due);
        due
    }

    fn release(&mut self, due: Instant, held: Held<T>) {
        if held.overtaken {
            self.counts.reordered += 1;
        }
        self.schedule(due, held.to, held.datagram, held.copies);
    }

    fn schedule(&mut self, due: Instant, to: T, datagram: Vec<u8>, copies: u32) {
        if copies > 1 {
            self.counts.duplicated += u64::from(copies - 1);
            for _ in 1..copies {
                self.scheduled
                    .push_back((due, to.clone(), datagram.clone()));
            }
        }
        self.scheduled.push_back((due, to, datagram));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Admits `n` numbered datagrams 1 ms apart and collects everything delivered, in order.
    fn run(impairment: Impairment, seed: u64, n: u32) -> (Vec<Vec<u8>>, DirectionCounts) {
        let mut impairer = Impairer::new(impairment, seed);
        let start = Instant::now();
        let mut out = Vec::new();
        for i in 0..n {
            let now = start + Duration::from_millis(u64::from(i));
            impairer.admit(now, (), i.to_be_bytes().to_vec());
            out.extend(impairer.due(now).into_iter().map(|(_, d)| d));
        }
        let end = start + Duration::from_secs(3600);
        out.extend(impairer.due(end).into_iter().map(|(_, d)| d));
        (out, impairer.counts())
    }

    fn number(datagram: &[u8]) -> u32 {
        u32::from_be_bytes(datagram.try_into().expect("four bytes"))
    }

    #[test]
    fn no_impairment_passes_everything_in_order_at_once() {
        let mut impairer = Impairer::new(Impairment::none(), 1);
        let now = Instant::now();
        impairer.admit(now, 7u8, b"a".to_vec());
        impairer.admit(now, 8u8, b"b".to_vec());
        assert_eq!(
            impairer.due(now),
            vec![(7, b"a".to_vec()), (8, b"b".to_vec())]
        );
        assert_eq!(impairer.next_wakeup(), None);
        let counts = impairer.counts();
        assert_eq!((counts.received, counts.forwarded), (2, 2));
    }

    #[test]
    fn loss_drops_about_its_share_and_counts_every_drop() {
        let (out, counts) = run(
            Impairment {
                loss: 0.05,
                ..Impairment::none()
            },
            42,
            20_000,
        );
        assert_eq!(counts.dropped + counts.forwarded, 20_000);
        assert_eq!(out.len() as u64, counts.forwarded);
        assert!((800..1200).contains(&counts.dropped), "{counts:?}");
        assert!(out.windows(2).all(|w| number(&w[0]) < number(&w[1])));
    }

    #[test]
    fn bursts_drop_runs_of_their_length() {
        let (out, counts) = run(
            Impairment {
                burst: Some(Burst {
                    probability: 0.01,
                    length: 5,
                }),
                ..Impairment::none()
            },
            3,
            10_000,
        );
        assert!(counts.burst_dropped >= 5, "{counts:?}");
        let delivered: Vec<u32> = out.iter().map(|d| number(d)).collect();
        let gaps: Vec<u32> = delivered
            .windows(2)
            .map(|w| w[1] - w[0] - 1)
            .filter(|gap| *gap > 0)
            .collect();
        assert!(
            gaps.iter().all(|gap| gap % 5 == 0),
            "every gap is whole bursts: {gaps:?}"
        );
    }

    #[test]
    fn duplication_delivers_extra_copies_right_after_the_original() {
        let (out, counts) = run(
            Impairment {
                duplicate: 0.1,
                ..Impairment::none()
            },
            5,
            10_000,
        );
        assert!((800..1200).contains(&counts.duplicated), "{counts:?}");
        assert_eq!(out.len() as u64, 10_000 + counts.duplicated);
        let repeats = out.windows(2).filter(|w| w[0] == w[1]).count() as u64;
        assert_eq!(repeats, counts.duplicated);
    }

    #[test]
    fn reordering_holds_a_datagram_behind_the_next_ones() {
        let (out, counts) = run(
            Impairment {
                reorder: 0.05,
                reorder_gap: 3,
                ..Impairment::none()
            },
            9,
            10_000,
        );
        assert_eq!(out.len(), 10_000, "reordering loses nothing");
        let mut highest = 0;
        let mut late = 0u64;
        for datagram in &out {
            let n = number(datagram);
            if n < highest {
                late += 1;
            }
            highest = highest.max(n);
        }
        assert!(counts.reordered >= 300, "{counts:?}");
        assert_eq!(late, counts.reordered, "every reordered one came late");
    }

    #[test]
    fn a_held_datagram_goes_out_when_the_link_stays_quiet() {
        let mut impairer = Impairer::new(
            Impairment {
                reorder: 1.0,
                reorder_gap: 3,
                ..Impairment::none()
            },
            1,
        );
        let now = Instant::now();
        impairer.admit(now, (), b"alone".to_vec());
        assert!(impairer.due(now).is_empty());
        assert_eq!(impairer.next_wakeup(), Some(now + MAX_HOLD));
        assert_eq!(impairer.due(now + MAX_HOLD).len(), 1);
        assert_eq!(
            impairer.counts().reordered,
            0,
            "nothing overtook it: not reordered"
        );
    }

    #[test]
    fn corruption_changes_one_byte_of_the_counted_datagrams_only() {
        let mut impairer = Impairer::new(
            Impairment {
                corrupt: 0.2,
                ..Impairment::none()
            },
            11,
        );
        let now = Instant::now();
        let original = vec![0u8; 64];
        for _ in 0..1000 {
            impairer.admit(now, (), original.clone());
        }
        let out = impairer.due(now);
        let changed: Vec<usize> = out
            .iter()
            .map(|(_, d)| d.iter().zip(&original).filter(|(a, b)| a != b).count())
            .filter(|n| *n > 0)
            .collect();
        assert!(changed.iter().all(|n| *n == 1), "one byte each");
        assert_eq!(changed.len() as u64, impairer.counts().corrupted);
        assert!((150..250).contains(&changed.len()), "{}", changed.len());
    }

    #[test]
    fn delay_with_jitter_stays_in_its_band_and_keeps_order() {
        let mut impairer = Impairer::new(
            Impairment {
                delay: Duration::from_millis(20),
                jitter: Duration::from_millis(10),
                ..Impairment::none()
            },
            13,
        );
        let start = Instant::now();
        impairer.admit(start, (), vec![1]);
        assert!(impairer.due(start + Duration::from_millis(9)).is_empty());
        assert_eq!(impairer.due(start + Duration::from_millis(30)).len(), 1);
        // Arriving 1 ms apart, none overtakes another whatever its jitter.
        let later = start + Duration::from_secs(1);
        for i in 0..100u8 {
            impairer.admit(later + Duration::from_millis(u64::from(i)), (), vec![i]);
        }
        let out = impairer.due(later + Duration::from_secs(1));
        let order: Vec<u8> = out.iter().map(|(_, d)| d[0]).collect();
        assert_eq!(order, (0..100).collect::<Vec<u8>>());
    }

    #[test]
    fn the_same_seed_gives_the_same_fate() {
        let chaos = Impairment {
            loss: 0.05,
            duplicate: 0.05,
            reorder: 0.05,
            reorder_gap: 2,
            corrupt: 0.05,
            ..Impairment::none()
        };
        assert_eq!(run(chaos, 77, 2000), run(chaos, 77, 2000));
        assert_ne!(run(chaos, 77, 2000).0, run(chaos, 78, 2000).0);
    }
}
