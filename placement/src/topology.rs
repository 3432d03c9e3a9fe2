//! Choosing GPU sets with the best links for multi-GPU (tensor-parallel)
//! containers.

use smallvec::SmallVec;

use crate::model::LinkLevel;
use crate::state::NodeState;

/// A set of GPU positions; inline for the sizes nodes have.
pub(crate) type GpuSet = SmallVec<[usize; 8]>;

/// Most search steps for one set; nodes with many GPUs and irregular links
/// get the best set found within it.
const SEARCH_BUDGET: u32 = 100_000;

/// The worst link inside a set of GPU positions, as a rank (0 = NVSwitch).
pub(crate) fn worst_rank(node: &NodeState, set: &[usize]) -> u8 {
    let mut worst = 0;
    for (k, &i) in set.iter().enumerate() {
        for &j in &set[k + 1..] {
            worst = worst.max(node.link(i, j));
        }
    }
    worst
}

/// Picks `count` GPUs from `order` (candidates, most preferred first) whose
/// worst link is best, then whose links are best in sum, then earliest in
/// preference; every pair must be within `max_link` when given.
pub(crate) fn best_set(
    node: &NodeState,
    order: &[usize],
    count: usize,
    max_link: Option<LinkLevel>,
) -> Option<GpuSet> {
    let limit = max_link.map(LinkLevel::rank).unwrap_or(u8::MAX);
    if order.len() < count {
        return None;
    }
    if count <= 1 || node.uniform_links {
        if count >= 2 && node.link(order[0], order[1]) > limit {
            return None;
        }
        return Some(order[..count].iter().copied().collect());
    }
    let mut min_rank = u8::MAX;
    for (k, &i) in order.iter().enumerate() {
        for &j in &order[k + 1..] {
            min_rank = min_rank.min(node.link(i, j));
        }
    }
    let pairs = (count * (count - 1) / 2) as u32;
    let ideal = (min_rank, min_rank as u32 * pairs);
    let mut search = Search {
        node,
        order,
        count,
        limit,
        best: None,
        cur: GpuSet::new(),
        steps: 0,
        ideal,
    };
    search.go(0, 0, 0);
    search.best.map(|(_, _, set)| set)
}

struct Search<'a> {
    node: &'a NodeState,
    order: &'a [usize],
    count: usize,
    limit: u8,
    best: Option<(u8, u32, GpuSet)>,
    cur: GpuSet,
    steps: u32,
    ideal: (u8, u32),
}

impl Search<'_> {
    fn done(&self) -> bool {
        self.steps >= SEARCH_BUDGET
            || self
                .best
                .as_ref()
                .is_some_and(|(w, s, _)| (*w, *s) == self.ideal)
    }

    fn go(&mut self, from: usize, worst: u8, sum: u32) {
        if self.cur.len() == self.count {
            let better = match &self.best {
                None => true,
                Some((bw, bs, _)) => (worst, sum) < (*bw, *bs),
            };
            if better {
                self.best = Some((worst, sum, self.cur.clone()));
            }
            return;
        }
        for k in from..self.order.len() {
            if self.done() || self.order.len() - k < self.count - self.cur.len() {
                return;
            }
            self.steps += 1;
            let p = self.order[k];
            let mut w = worst;
            let mut s = sum;
            let mut ok = true;
            for &q in &self.cur {
                let r = self.node.link(p, q);
                if r > self.limit {
                    ok = false;
                    break;
                }
                w = w.max(r);
                s += r as u32;
            }
            if !ok {
                continue;
            }
            if let Some((bw, bs, _)) = &self.best
                && (w, s) >= (*bw, *bs)
            {
                continue;
            }
            self.cur.push(p);
            self.go(k + 1, w, s);
            self.cur.pop();
        }
    }
}

/// Upper bound on how many of `cands` could form a set within `max_link`
/// (exact when links nest, as PCIe trees and NVSwitch fabrics do).
pub(crate) fn largest_group(
    node: &NodeState,
    cands: &[usize],
    max_link: Option<LinkLevel>,
) -> usize {
    let limit = max_link.map(LinkLevel::rank).unwrap_or(u8::MAX);
    cands
        .iter()
        .map(|&i| {
            1 + cands
                .iter()
                .filter(|&&j| j != i && node.link(i, j) <= limit)
                .count()
        })
        .max()
        .unwrap_or(0)
}
