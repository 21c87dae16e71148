//! Bytecode: a flat chunk of opcodes with a constant pool and a slot table, its byte encoding,
//! and the verifier. The VM only accepts a [`Verified`] chunk, which only [`verify`] makes.
//!
//! Verified means: every opcode is known, every operand is in range, every jump goes forward
//! to an instruction of the chunk, the stack depth at each instruction is the same on every
//! path and never underflows, every path ends in `Return` with exactly one value, and no
//! instruction is unreachable. Only forward jumps, so every run terminates; the static cost is
//! the number of instructions on the longest path, and the VM never executes more.

use super::names::SlotPath;
use super::value::CmpKind;
use crate::source::Span;
use serde_json::Value;
use smallvec::SmallVec;
use std::fmt::Write as _;

/// One instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Push the value of a slot.
    LoadSlot(u16),
    /// Push a constant.
    LoadConst(u16),
    /// Pop `rhs`, pop `lhs`, push `lhs OP rhs`.
    Cmp(CmpKind),
    /// Push `slot OP const` (a fused `LoadSlot; LoadConst; Cmp`).
    CmpSlotConst(CmpKind, u16, u16),
    /// Push `const OP slot`.
    CmpConstSlot(CmpKind, u16, u16),
    /// Pop a value, push `not truthy(value)`.
    Not,
    /// Pop a value, push `truthy(value)`.
    ToBool,
    /// If the top is falsy jump to the target keeping it, else pop it.
    JumpIfFalseOrPop(u16),
    /// If the top is truthy jump to the target keeping it, else pop it.
    JumpIfTrueOrPop(u16),
    /// Pop the result; its truthiness is the condition's value.
    Return,
}

/// Hard ceilings of the verifier, independent of the language limits.
pub const MAX_CODE: usize = u16::MAX as usize;
pub const MAX_STACK: usize = 1024;

/// A chunk as the compiler (or a decoder) produced it; not yet trusted.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub code: Vec<Op>,
    pub consts: Vec<Value>,
    pub slots: Vec<SlotPath>,
    /// The source span of each instruction (for run-time errors); may be empty.
    pub spans: Vec<Span>,
}

/// A chunk that passed [`verify`].
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    chunk: Chunk,
    max_stack: usize,
    cost: u32,
}

impl Verified {
    pub fn chunk(&self) -> &Chunk {
        &self.chunk
    }

    /// Most values on the stack at once.
    pub fn max_stack(&self) -> usize {
        self.max_stack
    }

    /// Instructions on the longest path: the VM never uses more fuel.
    pub fn cost(&self) -> u32 {
        self.cost
    }

    pub fn span_of(&self, pc: usize) -> Span {
        self.chunk.spans.get(pc).copied().unwrap_or_default()
    }
}

/// Why a chunk was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("empty chunk")]
    Empty,
    #[error("chunk has {0} instructions; the limit is {MAX_CODE}")]
    TooLong(usize),
    #[error("unknown opcode {byte:#04x} at byte {at}")]
    UnknownOpcode { byte: u8, at: usize },
    #[error("unknown comparison {byte:#04x} at byte {at}")]
    UnknownCmp { byte: u8, at: usize },
    #[error("truncated instruction at byte {0}")]
    Truncated(usize),
    #[error("instruction {pc}: slot {index} out of range ({len} slots)")]
    SlotOutOfRange { pc: usize, index: u16, len: usize },
    #[error("instruction {pc}: constant {index} out of range ({len} constants)")]
    ConstOutOfRange { pc: usize, index: u16, len: usize },
    #[error("instruction {pc}: jump to {target} is not forward within the chunk")]
    BadJump { pc: usize, target: u16 },
    #[error("instruction {pc}: stack underflow")]
    Underflow { pc: usize },
    #[error("instruction {pc}: stack depth {a} on one path and {b} on another")]
    DepthMismatch { pc: usize, a: usize, b: usize },
    #[error("instruction {pc}: stack deeper than {MAX_STACK}")]
    StackTooDeep { pc: usize },
    #[error("instruction {pc}: return with {depth} values on the stack")]
    BadReturn { pc: usize, depth: usize },
    #[error("instruction {pc} falls off the end of the chunk")]
    FallsOff { pc: usize },
    #[error("instruction {pc} is unreachable")]
    Unreachable { pc: usize },
    #[error("{spans} spans for {code} instructions")]
    SpanCount { spans: usize, code: usize },
}

impl Op {
    /// (pops, pushes) of the instruction.
    fn effect(self) -> (usize, usize) {
        match self {
            Op::LoadSlot(_) | Op::LoadConst(_) | Op::CmpSlotConst(..) | Op::CmpConstSlot(..) => {
                (0, 1)
            }
            Op::Cmp(_) => (2, 1),
            Op::Not | Op::ToBool => (1, 1),
            Op::JumpIfFalseOrPop(_) | Op::JumpIfTrueOrPop(_) | Op::Return => (1, 0),
        }
    }

    fn jump_target(self) -> Option<u16> {
        match self {
            Op::JumpIfFalseOrPop(t) | Op::JumpIfTrueOrPop(t) => Some(t),
            _ => None,
        }
    }
}

/// Check a chunk and compute its stack bound and static cost.
pub fn verify(chunk: Chunk) -> Result<Verified, VerifyError> {
    let n = chunk.code.len();
    if n == 0 {
        return Err(VerifyError::Empty);
    }
    if n > MAX_CODE {
        return Err(VerifyError::TooLong(n));
    }
    if !chunk.spans.is_empty() && chunk.spans.len() != n {
        return Err(VerifyError::SpanCount {
            spans: chunk.spans.len(),
            code: n,
        });
    }
    let slot_ok = |pc: usize, i: u16| {
        if usize::from(i) < chunk.slots.len() {
            Ok(())
        } else {
            Err(VerifyError::SlotOutOfRange {
                pc,
                index: i,
                len: chunk.slots.len(),
            })
        }
    };
    let const_ok = |pc: usize, i: u16| {
        if usize::from(i) < chunk.consts.len() {
            Ok(())
        } else {
            Err(VerifyError::ConstOutOfRange {
                pc,
                index: i,
                len: chunk.consts.len(),
            })
        }
    };

    // Forward pass: all predecessors of an instruction precede it (jumps go forward only).
    let mut depth: SmallVec<[Option<usize>; 16]> = smallvec::smallvec![None; n];
    let mut max_stack = 0;
    if let Some(d) = depth.first_mut() {
        *d = Some(0);
    }
    let merge =
        |depth: &mut [Option<usize>], pc: usize, at: usize, d: usize| -> Result<(), VerifyError> {
            match depth.get_mut(at) {
                None => Err(VerifyError::FallsOff { pc }),
                Some(slot @ None) => {
                    *slot = Some(d);
                    Ok(())
                }
                Some(Some(prev)) if *prev == d => Ok(()),
                Some(Some(prev)) => Err(VerifyError::DepthMismatch {
                    pc: at,
                    a: *prev,
                    b: d,
                }),
            }
        };
    for (pc, op) in chunk.code.iter().copied().enumerate() {
        let Some(d) = depth.get(pc).copied().flatten() else {
            return Err(VerifyError::Unreachable { pc });
        };
        match op {
            Op::LoadSlot(i) => slot_ok(pc, i)?,
            Op::LoadConst(i) => const_ok(pc, i)?,
            Op::CmpSlotConst(_, s, c) | Op::CmpConstSlot(_, c, s) => {
                slot_ok(pc, s)?;
                const_ok(pc, c)?;
            }
            _ => {}
        }
        let (pops, pushes) = op.effect();
        if d < pops {
            return Err(VerifyError::Underflow { pc });
        }
        let after = d - pops + pushes;
        if after > MAX_STACK {
            return Err(VerifyError::StackTooDeep { pc });
        }
        max_stack = max_stack.max(after);
        if let Some(t) = op.jump_target() {
            let target = usize::from(t);
            if target <= pc || target >= n {
                return Err(VerifyError::BadJump { pc, target: t });
            }
            // Jumping keeps the tested value.
            merge(&mut depth, pc, target, d)?;
        }
        if op == Op::Return {
            if d != 1 {
                return Err(VerifyError::BadReturn { pc, depth: d });
            }
        } else {
            merge(&mut depth, pc, pc + 1, after)?;
        }
    }

    // Static cost: instructions on the longest path, computed backwards.
    let mut cost: SmallVec<[u32; 16]> = smallvec::smallvec![0u32; n];
    for pc in (0..n).rev() {
        let op = chunk.code.get(pc).copied().unwrap_or(Op::Return);
        let succ = |i: usize| cost.get(i).copied().unwrap_or(0);
        let next = if op == Op::Return { 0 } else { succ(pc + 1) };
        let jump = op.jump_target().map_or(0, |t| succ(usize::from(t)));
        if let Some(c) = cost.get_mut(pc) {
            *c = 1 + next.max(jump);
        }
    }
    let cost = cost.first().copied().unwrap_or(0);
    Ok(Verified {
        chunk,
        max_stack,
        cost,
    })
}

// ---- byte encoding -------------------------------------------------------------------------

const OP_LOAD_SLOT: u8 = 0x01;
const OP_LOAD_CONST: u8 = 0x02;
const OP_CMP: u8 = 0x03;
const OP_CMP_SLOT_CONST: u8 = 0x04;
const OP_CMP_CONST_SLOT: u8 = 0x05;
const OP_NOT: u8 = 0x06;
const OP_TO_BOOL: u8 = 0x07;
const OP_JUMP_IF_FALSE: u8 = 0x08;
const OP_JUMP_IF_TRUE: u8 = 0x09;
const OP_RETURN: u8 = 0x0a;

fn cmp_byte(k: CmpKind) -> u8 {
    match k {
        CmpKind::Eq => 0,
        CmpKind::Ne => 1,
        CmpKind::Lt => 2,
        CmpKind::Le => 3,
        CmpKind::Gt => 4,
        CmpKind::Ge => 5,
        CmpKind::In => 6,
        CmpKind::NotIn => 7,
    }
}

/// Encode instructions as bytes: an opcode byte, then operands (comparison byte, u16 LE).
pub fn encode(code: &[Op]) -> Vec<u8> {
    let mut out = Vec::with_capacity(code.len() * 3);
    for op in code {
        match *op {
            Op::LoadSlot(i) => {
                out.push(OP_LOAD_SLOT);
                out.extend(i.to_le_bytes());
            }
            Op::LoadConst(i) => {
                out.push(OP_LOAD_CONST);
                out.extend(i.to_le_bytes());
            }
            Op::Cmp(k) => out.extend([OP_CMP, cmp_byte(k)]),
            Op::CmpSlotConst(k, s, c) => {
                out.extend([OP_CMP_SLOT_CONST, cmp_byte(k)]);
                out.extend(s.to_le_bytes());
                out.extend(c.to_le_bytes());
            }
            Op::CmpConstSlot(k, c, s) => {
                out.extend([OP_CMP_CONST_SLOT, cmp_byte(k)]);
                out.extend(c.to_le_bytes());
                out.extend(s.to_le_bytes());
            }
            Op::Not => out.push(OP_NOT),
            Op::ToBool => out.push(OP_TO_BOOL),
            Op::JumpIfFalseOrPop(t) => {
                out.push(OP_JUMP_IF_FALSE);
                out.extend(t.to_le_bytes());
            }
            Op::JumpIfTrueOrPop(t) => {
                out.push(OP_JUMP_IF_TRUE);
                out.extend(t.to_le_bytes());
            }
            Op::Return => out.push(OP_RETURN),
        }
    }
    out
}

/// Decode bytes into instructions (not verified).
pub fn decode(bytes: &[u8]) -> Result<Vec<Op>, VerifyError> {
    let mut code = Vec::new();
    let mut at = 0;
    let u16_at = |i: usize| -> Result<u16, VerifyError> {
        match (bytes.get(i), bytes.get(i + 1)) {
            (Some(a), Some(b)) => Ok(u16::from_le_bytes([*a, *b])),
            _ => Err(VerifyError::Truncated(i)),
        }
    };
    let cmp_at = |i: usize| -> Result<CmpKind, VerifyError> {
        let byte = *bytes.get(i).ok_or(VerifyError::Truncated(i))?;
        CmpKind::ALL
            .get(usize::from(byte))
            .copied()
            .ok_or(VerifyError::UnknownCmp { byte, at: i })
    };
    while let Some(&byte) = bytes.get(at) {
        if code.len() >= MAX_CODE {
            return Err(VerifyError::TooLong(code.len() + 1));
        }
        let (op, len) = match byte {
            OP_LOAD_SLOT => (Op::LoadSlot(u16_at(at + 1)?), 3),
            OP_LOAD_CONST => (Op::LoadConst(u16_at(at + 1)?), 3),
            OP_CMP => (Op::Cmp(cmp_at(at + 1)?), 2),
            OP_CMP_SLOT_CONST => (
                Op::CmpSlotConst(cmp_at(at + 1)?, u16_at(at + 2)?, u16_at(at + 4)?),
                6,
            ),
            OP_CMP_CONST_SLOT => (
                Op::CmpConstSlot(cmp_at(at + 1)?, u16_at(at + 2)?, u16_at(at + 4)?),
                6,
            ),
            OP_NOT => (Op::Not, 1),
            OP_TO_BOOL => (Op::ToBool, 1),
            OP_JUMP_IF_FALSE => (Op::JumpIfFalseOrPop(u16_at(at + 1)?), 3),
            OP_JUMP_IF_TRUE => (Op::JumpIfTrueOrPop(u16_at(at + 1)?), 3),
            OP_RETURN => (Op::Return, 1),
            _ => return Err(VerifyError::UnknownOpcode { byte, at }),
        };
        code.push(op);
        at += len;
    }
    Ok(code)
}

/// A human listing of a verified chunk (`nanovm eval --disasm`).
pub fn disassemble(v: &Verified) -> String {
    let c = v.chunk();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "; {} instructions, {} constants, {} slots, max stack {}, cost {}",
        c.code.len(),
        c.consts.len(),
        c.slots.len(),
        v.max_stack(),
        v.cost()
    );
    for (i, s) in c.slots.iter().enumerate() {
        let _ = writeln!(out, "; slot  {i}: {s}");
    }
    for (i, k) in c.consts.iter().enumerate() {
        let _ = writeln!(out, "; const {i}: {k}");
    }
    let slot = |i: u16| {
        c.slots
            .get(usize::from(i))
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    let konst = |i: u16| {
        c.consts
            .get(usize::from(i))
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    for (pc, op) in c.code.iter().enumerate() {
        let text = match *op {
            Op::LoadSlot(i) => format!("load_slot   {i:<5} ; {}", slot(i)),
            Op::LoadConst(i) => format!("load_const  {i:<5} ; {}", konst(i)),
            Op::Cmp(k) => format!("cmp         {}", k.as_str()),
            Op::CmpSlotConst(k, s, k2) => {
                format!(
                    "cmp_sc      {} {s} {k2} ; {} {} {}",
                    k.as_str(),
                    slot(s),
                    k.as_str(),
                    konst(k2)
                )
            }
            Op::CmpConstSlot(k, k2, s) => {
                format!(
                    "cmp_cs      {} {k2} {s} ; {} {} {}",
                    k.as_str(),
                    konst(k2),
                    k.as_str(),
                    slot(s)
                )
            }
            Op::Not => "not".to_owned(),
            Op::ToBool => "to_bool".to_owned(),
            Op::JumpIfFalseOrPop(t) => format!("jump_false  -> {t:04}"),
            Op::JumpIfTrueOrPop(t) => format!("jump_true   -> {t:04}"),
            Op::Return => "return".to_owned(),
        };
        let _ = writeln!(out, "{pc:04}  {text}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::panic, clippy::unwrap_used)]
    use super::*;

    fn chunk(code: Vec<Op>) -> Chunk {
        Chunk {
            code,
            consts: vec![Value::Bool(true)],
            slots: vec![],
            spans: vec![],
        }
    }

    #[test]
    fn verifier_rejects() {
        assert_eq!(verify(chunk(vec![])), Err(VerifyError::Empty));
        assert_eq!(
            verify(chunk(vec![Op::Return])),
            Err(VerifyError::Underflow { pc: 0 })
        );
        assert!(matches!(
            verify(chunk(vec![Op::LoadSlot(0), Op::Return])),
            Err(VerifyError::SlotOutOfRange { .. })
        ));
        assert!(matches!(
            verify(chunk(vec![Op::LoadConst(0)])),
            Err(VerifyError::FallsOff { .. })
        ));
        assert!(matches!(
            verify(chunk(vec![
                Op::LoadConst(0),
                Op::JumpIfTrueOrPop(0),
                Op::Return
            ])),
            Err(VerifyError::BadJump { .. })
        ));
        assert!(matches!(
            verify(chunk(vec![Op::LoadConst(0), Op::LoadConst(0), Op::Return])),
            Err(VerifyError::BadReturn { .. })
        ));
        assert!(matches!(
            verify(chunk(vec![Op::LoadConst(0), Op::Return, Op::Return])),
            Err(VerifyError::Unreachable { pc: 2 })
        ));
        // A jump that skips a push lands with a different depth.
        assert!(matches!(
            verify(chunk(vec![
                Op::LoadConst(0),
                Op::JumpIfTrueOrPop(4),
                Op::LoadConst(0),
                Op::LoadConst(0),
                Op::Cmp(CmpKind::Eq),
                Op::Return
            ])),
            Err(VerifyError::DepthMismatch { .. })
        ));
    }

    #[test]
    fn cost_is_longest_path() {
        let v = verify(chunk(vec![
            Op::LoadConst(0),
            Op::JumpIfFalseOrPop(4),
            Op::LoadConst(0),
            Op::ToBool,
            Op::Return,
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.cost(), 5);
        assert_eq!(v.max_stack(), 1);
    }

    #[test]
    fn encoding_round_trips() {
        let code = vec![
            Op::CmpSlotConst(CmpKind::Ge, 3, 4),
            Op::JumpIfTrueOrPop(7),
            Op::LoadSlot(1),
            Op::LoadConst(300),
            Op::Cmp(CmpKind::NotIn),
            Op::Not,
            Op::ToBool,
            Op::CmpConstSlot(CmpKind::In, 1, 2),
            Op::JumpIfFalseOrPop(9),
            Op::Return,
        ];
        assert_eq!(decode(&encode(&code)), Ok(code));
        assert!(matches!(
            decode(&[0xff]),
            Err(VerifyError::UnknownOpcode { .. })
        ));
        assert!(matches!(
            decode(&[OP_LOAD_SLOT, 1]),
            Err(VerifyError::Truncated(_))
        ));
        assert!(matches!(
            decode(&[OP_CMP, 9]),
            Err(VerifyError::UnknownCmp { .. })
        ));
    }
}
