//! The task mix: what each AddTasks batch holds (singles, chains, a failure with its
//! dependents, flaky and slow tasks) and the prompts that carry it. A batch's layout depends
//! only on the seed and the batch number, so every try of a batch sends the same tasks; the
//! prompt names the batch, the try, the index and the kind, so the checks can tell from the
//! database alone which call a task came from and what it should have done.

use orca_proto::pb;

use super::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Completes.
    Ok,
    /// Completes; depends on other tasks.
    Dep,
    /// Exits 1 on every attempt, max_retries 0.
    Fail,
    /// Exits 1 on attempt 1 only, max_retries 2.
    Flaky,
    /// Completes after a second.
    Slow,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Ok => "ok",
            Kind::Dep => "dep",
            Kind::Fail => "fail",
            Kind::Flaky => "flaky",
            Kind::Slow => "slow",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "ok" => Kind::Ok,
            "dep" => Kind::Dep,
            "fail" => Kind::Fail,
            "flaky" => Kind::Flaky,
            "slow" => Kind::Slow,
            _ => return None,
        })
    }
}

pub struct Planned {
    pub kind: Kind,
    /// Indices of earlier tasks of the same batch.
    pub deps: Vec<usize>,
}

/// The batch's layout, the same for every try of the batch.
pub fn plan_batch(seed: u64, b: usize, size: usize) -> Vec<Planned> {
    let mut rng = Rng::new(seed ^ (b as u64 + 1).wrapping_mul(0x0000_0100_0000_01B3));
    let mut v: Vec<Planned> = Vec::with_capacity(size);
    let p = |kind, deps: &[usize]| Planned { kind, deps: deps.to_vec() };
    while v.len() < size {
        let room = size - v.len();
        let at = v.len();
        let r = rng.below(100);
        if r < 10 && room >= 3 {
            // A chain: a <- b <- c.
            v.extend([p(Kind::Ok, &[]), p(Kind::Dep, &[at]), p(Kind::Dep, &[at + 1])]);
        } else if r < 14 && room >= 5 {
            // A failure and its dependents: all but the first are cancelled.
            v.extend([
                p(Kind::Ok, &[]),
                p(Kind::Fail, &[]),
                p(Kind::Dep, &[at + 1]),
                p(Kind::Dep, &[at + 2]),
                p(Kind::Dep, &[at, at + 1]),
            ]);
        } else if r < 20 && room >= 2 {
            v.extend([p(Kind::Flaky, &[]), p(Kind::Dep, &[at])]);
        } else if r < 22 {
            v.push(p(Kind::Slow, &[]));
        } else {
            v.push(p(Kind::Ok, &[]));
        }
    }
    v
}

fn prompt(b: usize, s: u32, i: usize, kind: Kind) -> String {
    format!("chaos b={b} s={s} i={i} kind={}", kind.name())
}

/// Where a task came from, read back from its prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    pub batch: usize,
    pub try_no: u32,
    pub index: usize,
    pub kind: Kind,
}

/// The origin of a prompt made by [`specs`].
pub fn parse_prompt(p: &str) -> Option<Origin> {
    let mut it = p.strip_prefix("chaos ")?.split(' ');
    let batch = it.next()?.strip_prefix("b=")?.parse().ok()?;
    let try_no = it.next()?.strip_prefix("s=")?.parse().ok()?;
    let index = it.next()?.strip_prefix("i=")?.parse().ok()?;
    let kind = Kind::parse(it.next()?.strip_prefix("kind=")?)?;
    Some(Origin { batch, try_no, index, kind })
}

/// The AddTasks specs of try `s` of batch `b`.
pub fn specs(plan: &[Planned], b: usize, s: u32) -> Vec<pb::TaskSpec> {
    plan.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut spec = pb::TaskSpec {
                prompt: prompt(b, s, i, p.kind),
                depends_on: p.deps.iter().map(|d| -(*d as i64 + 1)).collect(),
                ..Default::default()
            };
            match p.kind {
                Kind::Fail => spec.max_retries = Some(0),
                Kind::Flaky => {
                    spec.max_retries = Some(2);
                    spec.retry_policy =
                        Some(pb::RetryPolicy { initial_backoff_ms: 200, multiplier: 2.0, max_backoff_ms: 1_000 });
                }
                _ => {}
            }
            spec
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_the_same_on_every_try_and_its_prompts_parse_back() {
        let (a, b) = (plan_batch(7, 3, 200), plan_batch(7, 3, 200));
        assert_eq!(a.len(), 200);
        assert!(a.iter().zip(&b).all(|(x, y)| x.kind == y.kind && x.deps == y.deps));
        for (i, spec) in specs(&a, 3, 2).iter().enumerate() {
            let o = parse_prompt(&spec.prompt).expect("parses");
            assert_eq!((o.batch, o.try_no, o.index, o.kind), (3, 2, i, a[i].kind));
            assert!(spec.depends_on.iter().all(|d| *d < 0 && (-*d as usize) <= i));
        }
    }
}
