//! Answer lists, sets and tuples, item by item. A set holds an element once: when the gold's
//! items are distinct, a prediction that repeats one (`(1, 2), (3, 4), (1, 2)`) is read without
//! the repeat. Solutions written as assignments (`a=1, b=4; a=3, b=2`) are the tuples they
//! assign (`(1, 4), (3, 2)`).

use crate::equiv::{Cx, How};
use crate::expr::{Expr, RelOp};
use crate::limits::Limit;

type R = Result<bool, Limit>;

/// Most items compared in a list or set.
const MAX_ITEMS: usize = 64;

impl Cx<'_> {
    /// Item by item, in order.
    pub(crate) fn ordered(&mut self, g: &[Expr], p: &[Expr]) -> R {
        if g.len() != p.len() {
            return Ok(false);
        }
        for (a, b) in g.iter().zip(p) {
            if !self.equiv(a, b)? {
                return Ok(false);
            }
        }
        self.how = How::Structural;
        Ok(true)
    }

    /// Every gold item matched by a distinct prediction item (multiset equality), after the
    /// prediction's repeats are dropped when the gold has none: `1, 2, 2, 3` is the set
    /// `1, 2, 3`, but `2, 2, 3` (a double root, say) is not `2, 3`.
    pub(crate) fn unordered(&mut self, g: &[Expr], p: &[Expr]) -> R {
        if g.len() > MAX_ITEMS || p.len() > MAX_ITEMS || p.len() < g.len() {
            return Ok(false);
        }
        if p.len() > g.len() {
            if !self.distinct(g)? {
                return Ok(false);
            }
            let p = self.without_repeats(p)?;
            return self.matched(g, &p);
        }
        self.matched(g, p)
    }

    fn matched(&mut self, g: &[Expr], p: &[Expr]) -> R {
        if g.len() != p.len() {
            return Ok(false);
        }
        let mut used = vec![false; p.len()];
        for a in g {
            let mut found = false;
            for (j, b) in p.iter().enumerate() {
                if !used[j] && self.equiv(a, b)? {
                    used[j] = true;
                    found = true;
                    break;
                }
            }
            if !found {
                return Ok(false);
            }
        }
        self.how = How::Structural;
        Ok(true)
    }

    /// No two items the same answer.
    fn distinct(&mut self, items: &[Expr]) -> R {
        for (i, a) in items.iter().enumerate() {
            for b in &items[i + 1..] {
                if self.equiv(a, b)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The items less those equal to an earlier one.
    fn without_repeats(&mut self, items: &[Expr]) -> Result<Vec<Expr>, Limit> {
        let mut kept: Vec<Expr> = Vec::with_capacity(items.len());
        for it in items {
            let mut seen = false;
            for k in &kept {
                if self.equiv(k, it)? {
                    seen = true;
                    break;
                }
            }
            if !seen {
                kept.push(it.clone());
            }
        }
        Ok(kept)
    }

    /// Two answer lists or sets: as the tuples they assign when either is written as
    /// assignments of several solutions, else item by item without order.
    pub(crate) fn lists(&mut self, g: &[Expr], p: &[Expr]) -> R {
        let (gt, pt) = (assignment_tuples(g), assignment_tuples(p));
        self.unordered(gt.as_deref().unwrap_or(g), pt.as_deref().unwrap_or(p))
    }
}

/// `a=1, b=4; a=3, b=2` (or with "or", or commas only): the solutions a list of assignments
/// gives, as tuples in the order of the names in the first one; a solution ends where a name
/// comes again. `None` unless every item assigns a value to a plain name, and there are at
/// least two solutions, each of the same two or more names.
pub(crate) fn assignment_tuples(items: &[Expr]) -> Option<Vec<Expr>> {
    let mut groups: Vec<Vec<(&str, &Expr)>> = Vec::new();
    for it in items {
        let Expr::Rel(es, ops) = it else { return None };
        let ([Expr::Sym(name), value], [RelOp::Eq]) = (es.as_slice(), ops.as_slice()) else {
            return None;
        };
        let name: &str = name;
        if groups
            .last()
            .is_none_or(|g| g.iter().any(|(n, _)| *n == name))
        {
            groups.push(Vec::new());
        }
        groups.last_mut()?.push((name, value));
    }
    let names: Vec<&str> = groups.first()?.iter().map(|(n, _)| *n).collect();
    if groups.len() < 2 || names.len() < 2 {
        return None;
    }
    groups
        .iter()
        .map(|g| {
            if g.len() != names.len() {
                return None;
            }
            let values = names
                .iter()
                .map(|n| g.iter().find(|(m, _)| m == n).map(|(_, v)| (*v).clone()))
                .collect::<Option<Vec<Expr>>>()?;
            Some(Expr::Tuple(values))
        })
        .collect()
}
