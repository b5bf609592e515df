//! A chat template may not store a namespace inside a namespace.
//!
//! Namespaces are the only values a Jinja template can change after creating them, so they are
//! the only way to build a cycle: `{% set ns.n = [ns] %}` makes `ns` hold itself, and printing,
//! comparing or serializing it then recurses in minijinja (2.24, and upstream) until the stack
//! overflows, which aborts the process (found by fuzzing, `scripts/fuzz.sh chat_template`).
//!
//! minijinja has no hook on namespace assignment, so the template is checked before it renders:
//! an abstract interpretation over its syntax tree (minijinja's parser, `unstable_machinery`)
//! works out which expressions may evaluate to a namespace or to a list, map or object holding
//! one, and refuses every `{% set x.attr = value %}` whose value may. It over-approximates: names
//! are not scoped, every binding of a name counts everywhere, and a macro's parameters may hold
//! whatever any call passes. With every assignment to a namespace attribute namespace-free, a
//! namespace holds another only through `namespace(attr=...)` at creation, so values stay acyclic.
//! Real chat templates assign namespaces booleans, counters, strings and message fields and pass.

use minijinja::machinery::ast::{BinOpKind, CallArg, Expr, Stmt};
use minijinja::machinery::{parse, WhitespaceConfig};
use std::collections::{HashMap, HashSet};

/// What an expression may evaluate to, as far as namespaces go.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Shape {
    /// It may be a namespace.
    ns: bool,
    /// It may be a value (list, map, object, iterator) holding a namespace at some depth.
    holds: bool,
}

impl Shape {
    const NONE: Shape = Shape {
        ns: false,
        holds: false,
    };
    const ANY: Shape = Shape {
        ns: true,
        holds: true,
    };
    fn any(self) -> bool {
        self.ns || self.holds
    }
    /// Anything at all when `may` (an unknown value made of namespaces), else nothing.
    fn anything_if(may: bool) -> Shape {
        if may {
            Shape::ANY
        } else {
            Shape::NONE
        }
    }
    fn join(self, o: Shape) -> Shape {
        Shape {
            ns: self.ns || o.ns,
            holds: self.holds || o.holds,
        }
    }
    /// A container built from parts of this shape.
    fn contained(self) -> Shape {
        Shape {
            ns: false,
            holds: self.any(),
        }
    }
}

/// The facts the fixed point grows: they only ever gain namespaces, so it ends.
#[derive(Clone, Default, PartialEq, Eq)]
struct Facts {
    /// Every binding of a name, joined.
    names: HashMap<String, Shape>,
    /// Attributes that `namespace(...)` may have been given a namespace-holding value for.
    ns_attrs: HashSet<String>,
    /// `namespace(...)` got a positional or splatted argument that may hold one: any attribute.
    ns_any_attr: bool,
    /// Some call passes a namespace-holding argument: macro parameters may hold one.
    calls_pass_ns: bool,
    /// Names bound to macros: the macro value closes over what it reads (anything), but calling
    /// one returns a string.
    macros: HashSet<String>,
}

/// Why a template was refused: the offending assignment's line and attribute.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub line: u32,
    pub target: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}: `{{% set {} = ... %}}` may store a namespace inside a namespace, a cycle \
             minijinja cannot print without overflowing the stack; assign plain values \
             (strings, numbers, booleans, message fields) to namespace attributes",
            self.line, self.target
        )
    }
}

/// Checks a template; a template that does not parse passes (rendering reports that error).
pub(crate) fn check(src: &str) -> Result<(), Refusal> {
    let Ok(ast) = parse(
        src,
        "<string>",
        Default::default(), // SyntaxConfig: a unit struct unless minijinja's custom_syntax is on
        WhitespaceConfig::default(),
    ) else {
        return Ok(());
    };
    let mut facts = Facts::default();
    loop {
        let mut walk = Walk {
            facts: &facts,
            next: facts.clone(),
            refusal: None,
        };
        walk.stmt(&ast);
        if walk.next == facts {
            return walk.refusal.map_or(Ok(()), Err);
        }
        facts = walk.next;
    }
}

/// One pass over the tree: reads `facts`, grows `next`, records the first refused assignment.
struct Walk<'f> {
    facts: &'f Facts,
    next: Facts,
    refusal: Option<Refusal>,
}

impl Walk<'_> {
    fn bind(&mut self, target: &Expr, shape: Shape) {
        match target {
            Expr::Var(v) => self.bind_name(v.id, shape),
            // Unpacking (`a, b = x`, `for k, v in x`): each name may be any element.
            Expr::List(l) => {
                let elem = Shape::anything_if(shape.any());
                for t in &l.items {
                    self.bind(t, elem);
                }
            }
            _ => {}
        }
    }

    fn bind_params(&mut self, params: &[Expr]) {
        let shape = Shape::anything_if(self.facts.calls_pass_ns);
        for p in params {
            self.bind(p, shape);
        }
        for special in ["varargs", "kwargs", "caller"] {
            self.bind_name(special, shape);
        }
    }

    fn bind_name(&mut self, name: &str, shape: Shape) {
        let s = self.next.names.entry(name.to_string()).or_default();
        *s = s.join(shape);
    }

    /// `{% set target = value %}`: a name binds; an attribute (`ns.attr`) is refused when the
    /// value may hold a namespace.
    fn set(&mut self, target: &Expr, value: Shape, line: u32) {
        match target {
            Expr::GetAttr(_) | Expr::GetItem(_) => {
                if value.any() && self.refusal.is_none() {
                    self.refusal = Some(Refusal {
                        line,
                        target: describe(target),
                    });
                }
            }
            t => self.bind(t, value),
        }
    }

    fn stmts(&mut self, body: &[Stmt]) {
        for s in body {
            self.stmt(s);
        }
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Template(t) => self.stmts(&t.children),
            Stmt::EmitExpr(e) => {
                self.expr(&e.expr);
            }
            Stmt::EmitRaw(_) | Stmt::Continue(_) | Stmt::Break(_) => {}
            Stmt::ForLoop(f) => {
                let iter = self.expr(&f.iter);
                self.bind(&f.target, Shape::anything_if(iter.any()));
                // `loop` keeps the iterator (`loop.previtem`, `loop.nextitem`).
                self.bind_name("loop", iter.contained());
                if let Some(e) = &f.filter_expr {
                    self.expr(e);
                }
                self.stmts(&f.body);
                self.stmts(&f.else_body);
            }
            Stmt::IfCond(c) => {
                self.expr(&c.expr);
                self.stmts(&c.true_body);
                self.stmts(&c.false_body);
            }
            Stmt::WithBlock(w) => {
                for (target, value) in &w.assignments {
                    let v = self.expr(value);
                    self.bind(target, v);
                }
                self.stmts(&w.body);
            }
            Stmt::Set(set) => {
                let v = self.expr(&set.expr);
                self.set(&set.target, v, set.span().start_line.into());
            }
            Stmt::SetBlock(set) => {
                self.stmts(&set.body);
                // The captured body is a string; a filter on it may add its arguments.
                let v = set.filter.as_ref().map_or(Shape::NONE, |f| self.expr(f));
                self.set(&set.target, v, set.span().start_line.into());
            }
            Stmt::AutoEscape(a) => {
                self.expr(&a.enabled);
                self.stmts(&a.body);
            }
            Stmt::FilterBlock(f) => {
                self.expr(&f.filter);
                self.stmts(&f.body);
            }
            Stmt::Block(b) => self.stmts(&b.body),
            Stmt::Extends(e) => {
                self.expr(&e.name);
            }
            Stmt::Include(i) => {
                self.expr(&i.name);
            }
            // Imported names are whatever another template defines: anything.
            Stmt::Import(i) => self.bind(&i.name, Shape::ANY),
            Stmt::FromImport(i) => {
                for (name, alias) in &i.names {
                    self.bind(alias.as_ref().unwrap_or(name), Shape::ANY);
                }
            }
            Stmt::Macro(m) => {
                self.next.macros.insert(m.name.to_string());
                self.bind_params(&m.args);
                for d in &m.defaults {
                    self.expr(d);
                }
                self.stmts(&m.body);
            }
            Stmt::CallBlock(c) => {
                self.call(&c.call.expr, &c.call.args);
                self.bind_params(&c.macro_decl.args);
                for d in &c.macro_decl.defaults {
                    self.expr(d);
                }
                self.stmts(&c.macro_decl.body);
            }
            Stmt::Do(d) => {
                self.call(&d.call.expr, &d.call.args);
            }
        }
    }

    fn args(&mut self, args: &[CallArg]) -> Shape {
        let mut shape = Shape::NONE;
        for a in args {
            let (CallArg::Pos(e)
            | CallArg::Kwarg(_, e)
            | CallArg::PosSplat(e)
            | CallArg::KwargSplat(e)) = a;
            shape = shape.join(self.expr(e));
        }
        shape
    }

    fn call(&mut self, callee: &Expr, args: &[CallArg]) -> Shape {
        if matches!(callee, Expr::Var(v) if v.id == "namespace") {
            for a in args {
                match a {
                    CallArg::Kwarg(name, e) => {
                        if self.expr(e).any() {
                            self.next.ns_attrs.insert(name.to_string());
                            self.next.calls_pass_ns = true;
                        }
                    }
                    CallArg::Pos(e) | CallArg::PosSplat(e) | CallArg::KwargSplat(e) => {
                        if self.expr(e).any() {
                            self.next.ns_any_attr = true;
                            self.next.calls_pass_ns = true;
                        }
                    }
                }
            }
            return Shape {
                ns: true,
                holds: false,
            };
        }
        let f = self.expr(callee);
        let a = self.args(args);
        if a.any() {
            self.next.calls_pass_ns = true;
        }
        if let Expr::Var(v) = callee {
            let bound = self.facts.names.get(v.id).copied().unwrap_or_default();
            if (self.facts.macros.contains(v.id) || v.id == "caller") && !bound.any() {
                return Shape::NONE;
            }
        }
        // A builtin (`dict`, `cycler`), a method or a macro returns something made of its
        // arguments and its receiver at most.
        Shape::anything_if(a.any() || f.any())
    }

    /// An attribute or item of a value of shape `of`; `name` when it is known.
    fn member(&self, of: Shape, name: Option<&str>) -> Shape {
        let ns_attr = match name {
            Some(n) => self.facts.ns_any_attr || self.facts.ns_attrs.contains(n),
            None => self.facts.ns_any_attr || !self.facts.ns_attrs.is_empty(),
        };
        Shape::anything_if(of.holds || (of.ns && ns_attr))
    }

    fn expr(&mut self, e: &Expr) -> Shape {
        match e {
            Expr::Var(v) => match v.id {
                // The template object and anything not known by name.
                "self" | "super" => Shape::ANY,
                id if self.facts.macros.contains(id) => Shape::ANY,
                id => self.facts.names.get(id).copied().unwrap_or_default(),
            },
            Expr::Const(_) => Shape::NONE,
            Expr::Slice(s) => {
                for part in [&s.start, &s.stop, &s.step].into_iter().flatten() {
                    self.expr(part);
                }
                self.expr(&s.expr).contained()
            }
            Expr::UnaryOp(u) => {
                self.expr(&u.expr);
                Shape::NONE
            }
            Expr::BinOp(b) => {
                let (l, r) = (self.expr(&b.left), self.expr(&b.right));
                match b.op {
                    // `and`/`or` return an operand.
                    BinOpKind::ScAnd | BinOpKind::ScOr => l.join(r),
                    // `+` joins lists, `*` repeats them.
                    BinOpKind::Add | BinOpKind::Mul => l.join(r).contained(),
                    _ => Shape::NONE,
                }
            }
            Expr::Compare(c) => {
                self.expr(&c.expr);
                for op in &c.ops {
                    self.expr(&op.expr);
                }
                Shape::NONE
            }
            Expr::IfExpr(i) => {
                self.expr(&i.test_expr);
                let t = self.expr(&i.true_expr);
                let f = i.false_expr.as_ref().map_or(Shape::NONE, |f| self.expr(f));
                t.join(f)
            }
            Expr::Filter(f) => {
                let v = f.expr.as_ref().map_or(Shape::NONE, |e| self.expr(e));
                let a = self.args(&f.args);
                Shape::anything_if(v.any() || a.any())
            }
            Expr::Test(t) => {
                self.expr(&t.expr);
                self.args(&t.args);
                Shape::NONE
            }
            Expr::GetAttr(g) => {
                let of = self.expr(&g.expr);
                self.member(of, Some(g.name))
            }
            Expr::GetItem(g) => {
                let of = self.expr(&g.expr);
                self.expr(&g.subscript_expr);
                let name = match &g.subscript_expr {
                    Expr::Const(c) => c.value.as_str(),
                    _ => None,
                };
                self.member(of, name)
            }
            Expr::Call(c) => self.call(&c.expr, &c.args),
            Expr::List(l) => {
                let mut s = Shape::NONE;
                for item in &l.items {
                    s = s.join(self.expr(item));
                }
                s.contained()
            }
            Expr::Map(m) => {
                let mut s = Shape::NONE;
                for item in m.keys.iter().chain(&m.values) {
                    s = s.join(self.expr(item));
                }
                s.contained()
            }
        }
    }
}

/// `ns.attr` or `ns['key']` for the refusal message.
fn describe(target: &Expr) -> String {
    match target {
        Expr::Var(v) => v.id.to_string(),
        Expr::GetAttr(g) => format!("{}.{}", describe(&g.expr), g.name),
        Expr::GetItem(g) => format!("{}[...]", describe(&g.expr)),
        _ => "...".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::check;

    fn refused(src: &str) -> bool {
        check(src).is_err()
    }

    #[test]
    fn cycles_are_refused() {
        let ns = "{% set ns = namespace(n=1) %}";
        for body in [
            "{% set ns.n = ns %}",
            "{% set ns.n = [ns] %}",
            "{% set ns.n = ns, 9 / 1 %}",
            "{% set ns.n = {'a': [1, ns]} %}",
            "{% set x = ns %}{% set ns.n = x %}",
            "{% set a = [ns] %}{% set ns.n = a[0] %}",
            "{% for m in [ns] %}{% set ns.n = m %}{% endfor %}",
            "{% for m in [ns] %}{% set ns.n = loop.previtem %}{% endfor %}",
            "{% macro f(x) %}{% set ns.n = x %}{% endmacro %}{{ f(ns) }}",
            "{% set ns.n = ns or 1 %}",
            "{% set ns.n = dict(a=ns) %}",
            "{% set ns.n = [1] + [ns] %}",
            "{% set ns.n = (ns if true else 1) %}",
            "{% set ns.n = [ns] | first %}",
            "{% set other = namespace(inner=ns) %}{% set ns.n = other %}",
            "{% set other = namespace(inner=[ns]) %}{% set ns.n = other.inner %}",
            "{% set other = namespace({'inner': ns}) %}{% set ns.n = other.x %}",
            "{% set ns.n | f(ns) %}x{% endset %}",
            "{% with y = [ns] %}{% set ns.n = y %}{% endwith %}",
            "{% set a, b = [ns, 1] %}{% set ns.n = b %}",
            "{% set ns.n = self %}",
        ] {
            let src = format!("{ns}{body}");
            assert!(refused(&src), "{src}");
        }
        let err = check("{% set ns = namespace() %}\n\n{% set ns.n = [ns] %}").unwrap_err();
        assert_eq!((err.line, err.target.as_str()), (3, "ns.n"));
    }

    #[test]
    fn ordinary_namespace_use_passes() {
        for src in [
            "{% set ns = namespace(n=0, seen=[], last=none, flag=false) %}\
             {% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.seen = ns.seen + [m] %}\
             {% set ns.last = m %}{% set ns.flag = loop.last %}{% endfor %}{{ ns.n }}",
            "{% set ns = namespace(found=false) %}{% set other = namespace(inner=ns) %}\
             {% set ns.found = other.x %}",
            "{% set ns = namespace(i=messages|length - 1) %}\
             {% for m in messages[::-1] %}{% set index = (messages|length - 1) - loop.index0 %}\
             {% if m.role == 'user' %}{% set ns.i = index %}{% endif %}{% endfor %}",
            "{% set ns = namespace(s='') %}{% set ns.s %}{{ messages[0].content }}{% endset %}",
            "{% macro f(x) %}{{ x }}{% endmacro %}{% set ns = namespace(v=f(1)) %}\
             {% set ns.v = f(2) %}",
            "{% for in messages %}", // does not parse: rendering reports it
        ] {
            assert_eq!(check(src), Ok(()), "{src}");
        }
    }
}
