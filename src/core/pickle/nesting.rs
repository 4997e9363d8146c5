//! How deep a pickle nests its containers, found without building them. The pickle
//! readers mt uses (serde_pickle for PathVQA, candle's for `.bin` checkpoints) and the
//! code that walks their values recurse once per level: a 20 KB pickle of lists nested
//! 10,000 deep overflowed the stack and aborted mt (a fuzz finding). Walking the opcodes
//! first, with object identities as the pickle machine keeps them (the memo shares
//! objects, `APPEND` may fill a container after it was nested), gives the true depth;
//! a pickle deeper than its reader's limit, or one holding itself, is refused by name.

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};

/// Deeper than any real file mt reads (a torch state dict nests ~5 levels, PathVQA's
/// question list 2), shallow enough for every reader's recursion.
pub(crate) const MAX_DEPTH: usize = 100;

/// A value on the pickle machine's stack: a mark, something that holds nothing (numbers,
/// text, classes), or a container (any object that may hold others), by identity.
#[derive(Clone, Copy)]
enum Item {
    Mark,
    Leaf,
    Node(usize),
}

/// Fails when the pickle in `bytes` nests containers deeper than `limit`, holds itself,
/// or is not a readable opcode stream.
pub(crate) fn check(bytes: &[u8], limit: usize) -> Result<()> {
    let edges = containment(bytes)?;
    let depth = longest_chain(&edges)?;
    if depth > limit {
        bail!("nests containers {depth} deep (mt reads at most {limit})");
    }
    Ok(())
}

/// The machine's containers as `holds[parent] = children`, from the opcode stream.
fn containment(bytes: &[u8]) -> Result<Vec<Vec<usize>>> {
    let mut m = Machine::default();
    let mut at = 0usize;
    let truncated = || anyhow!("ends inside an opcode");
    let take = |at: &mut usize, n: usize| -> Result<&[u8]> {
        let end = at.checked_add(n).filter(|&e| e <= bytes.len());
        let s = &bytes[*at..end.ok_or_else(truncated)?];
        *at += n;
        Ok(s)
    };
    let uint = |s: &[u8]| s.iter().rev().fold(0u64, |v, &b| (v << 8) | u64::from(b));
    let line = |at: &mut usize| -> Result<&[u8]> {
        let len = bytes[*at..]
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(truncated)?;
        take(at, len + 1)
    };
    loop {
        let op = take(&mut at, 1)?[0];
        match op {
            b'.' => return Ok(m.holds),
            b'(' => m.stack.push(Item::Mark),
            b'0' => {
                m.pop()?;
            }
            b'1' => {
                m.pop_to_mark()?;
            }
            b'2' => {
                let top = m.top()?;
                m.stack.push(top);
            }
            // Leaves with no argument.
            b'N' | 0x88 | 0x89 | 0x97 => m.stack.push(Item::Leaf),
            0x98 => {} // READONLY_BUFFER marks the top
            // Leaves with fixed-size or length-prefixed arguments.
            b'J' | b'K' | b'M' | b'G' | 0x82 | 0x83 | 0x84 => {
                let n = match op {
                    b'J' | 0x84 => 4,
                    b'K' | 0x82 => 1,
                    b'M' | 0x83 => 2,
                    _ => 8,
                };
                take(&mut at, n)?;
                m.stack.push(Item::Leaf);
            }
            b'T' | b'U' | b'X' | 0x8c | 0x8d | b'B' | b'C' | 0x8e | 0x96 | 0x8a | 0x8b => {
                let width = match op {
                    b'U' | 0x8c | b'C' | 0x8a => 1,
                    b'T' | b'X' | b'B' | 0x8b => 4,
                    _ => 8,
                };
                let len = usize::try_from(uint(take(&mut at, width)?))
                    .map_err(|_| anyhow!("a length past the end"))?;
                take(&mut at, len)?;
                m.stack.push(Item::Leaf);
            }
            // Leaves with text arguments ending in a newline (GLOBAL has two lines).
            b'I' | b'L' | b'F' | b'S' | b'V' | b'P' => {
                line(&mut at)?;
                m.stack.push(Item::Leaf);
            }
            b'c' => {
                line(&mut at)?;
                line(&mut at)?;
                m.stack.push(Item::Leaf);
            }
            0x93 => {
                m.pop()?;
                m.pop()?;
                m.stack.push(Item::Leaf);
            }
            b'Q' => {
                let id = m.pop()?;
                m.wrap(&[id]);
            }
            0x80 => {
                take(&mut at, 1)?;
            }
            0x95 => {
                take(&mut at, 8)?;
            }
            // Empty containers.
            b']' | b'}' | b')' | 0x8f => m.wrap(&[]),
            // Containers of the items above the mark (INST names a class in two lines).
            b'l' | b't' | b'd' | 0x91 | b'o' | b'i' => {
                if op == b'i' {
                    line(&mut at)?;
                    line(&mut at)?;
                }
                let items = m.pop_to_mark()?;
                m.wrap(&items);
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = m.pop_n(n)?;
                m.wrap(&items);
            }
            // Calls: the result may hold its callable and arguments.
            b'R' | 0x81 | 0x92 => {
                let n = if op == 0x92 { 3 } else { 2 };
                let items = m.pop_n(n)?;
                m.wrap(&items);
            }
            // Filling the container below.
            b'a' | b'b' => {
                let item = m.pop()?;
                m.fill(&[item])?;
            }
            b's' => {
                let items = m.pop_n(2)?;
                m.fill(&items)?;
            }
            b'e' | b'u' | 0x90 => {
                let items = m.pop_to_mark()?;
                m.fill(&items)?;
            }
            // The memo shares objects: GET pushes the very object PUT stored.
            b'p' | b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'p' => text_number(line(&mut at)?)?,
                    b'q' => uint(take(&mut at, 1)?),
                    b'r' => uint(take(&mut at, 4)?),
                    _ => m.memo.len() as u64,
                };
                let top = m.top()?;
                m.memo.insert(key, top);
            }
            b'g' | b'h' | b'j' => {
                let key = match op {
                    b'g' => text_number(line(&mut at)?)?,
                    b'h' => uint(take(&mut at, 1)?),
                    _ => uint(take(&mut at, 4)?),
                };
                let item = *m
                    .memo
                    .get(&key)
                    .ok_or_else(|| anyhow!("reads memo entry {key}, which was never stored"))?;
                m.stack.push(item);
            }
            other => bail!("unknown opcode 0x{other:02x} at byte {}", at - 1),
        }
    }
}

fn text_number(line: &[u8]) -> Result<u64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow!("a memo key that is not a number"))
}

/// The abstract pickle machine: its stack, its memo and what each container holds.
#[derive(Default)]
struct Machine {
    stack: Vec<Item>,
    memo: HashMap<u64, Item>,
    holds: Vec<Vec<usize>>,
}

impl Machine {
    fn pop(&mut self) -> Result<Item> {
        self.stack
            .pop()
            .ok_or_else(|| anyhow!("pops an empty stack"))
    }

    fn top(&self) -> Result<Item> {
        self.stack
            .last()
            .copied()
            .ok_or_else(|| anyhow!("reads an empty stack"))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Item>> {
        let from = self
            .stack
            .len()
            .checked_sub(n)
            .ok_or_else(|| anyhow!("pops an empty stack"))?;
        Ok(self.stack.split_off(from))
    }

    fn pop_to_mark(&mut self) -> Result<Vec<Item>> {
        let mark = self
            .stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| anyhow!("no mark to pop to"))?;
        let items = self.stack.split_off(mark + 1);
        self.stack.pop();
        Ok(items)
    }

    /// Pushes a new container holding `items`.
    fn wrap(&mut self, items: &[Item]) {
        let id = self.holds.len();
        self.holds.push(Vec::new());
        self.add(id, items);
        self.stack.push(Item::Node(id));
    }

    /// Puts `items` into the container on top of the stack.
    fn fill(&mut self, items: &[Item]) -> Result<()> {
        match self.top()? {
            Item::Node(id) => {
                self.add(id, items);
                Ok(())
            }
            _ => bail!("adds items to something that is not a container"),
        }
    }

    fn add(&mut self, id: usize, items: &[Item]) {
        let children = items.iter().filter_map(|i| match i {
            Item::Node(c) => Some(*c),
            _ => None,
        });
        self.holds[id].extend(children);
    }
}

/// The most containers on one chain of `holds` (a container alone counts 1), without
/// recursion; an error when a container holds itself, directly or not.
fn longest_chain(holds: &[Vec<usize>]) -> Result<usize> {
    // Kahn's order from the leaves up: a container's depth is 1 + its deepest child's.
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); holds.len()];
    let mut pending: Vec<usize> = holds.iter().map(Vec::len).collect();
    for (parent, children) in holds.iter().enumerate() {
        for &c in children {
            parents[c].push(parent);
        }
    }
    let mut depth = vec![1usize; holds.len()];
    let mut ready: Vec<usize> = (0..holds.len()).filter(|&i| pending[i] == 0).collect();
    let mut done = 0;
    while let Some(node) = ready.pop() {
        done += 1;
        for &p in &parents[node] {
            depth[p] = depth[p].max(depth[node] + 1);
            pending[p] -= 1;
            if pending[p] == 0 {
                ready.push(p);
            }
        }
    }
    if done < holds.len() {
        bail!("holds itself (a recursive structure)");
    }
    Ok(depth.into_iter().max().unwrap_or(0))
}

/// A protocol-2 pickle of `n` lists, each appended into the one below (for tests).
#[cfg(test)]
pub(crate) fn nested_lists(n: usize) -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(std::iter::repeat_n(b']', n));
    p.extend(std::iter::repeat_n(b'a', n - 1));
    p.push(b'.');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_data_passes_with_its_depth() {
        // pickle.dumps([{"image": "a", "question": "q?", "answer": "yes"}], protocol=2)
        let p = b"\x80\x02]q\x00}q\x01(X\x05\x00\x00\x00imageq\x02X\x01\x00\x00\x00aq\x03X\x08\x00\x00\x00questionq\x04X\x02\x00\x00\x00q?q\x05X\x06\x00\x00\x00answerq\x06X\x03\x00\x00\x00yesq\x07ua.";
        let holds = containment(p).unwrap();
        assert_eq!(longest_chain(&holds).unwrap(), 2);
        check(p, 2).unwrap();
        assert!(check(p, 1).is_err());
    }

    #[test]
    fn deep_nesting_is_refused() {
        check(&nested_lists(MAX_DEPTH), MAX_DEPTH).unwrap();
        let err = check(&nested_lists(10_000), MAX_DEPTH).unwrap_err();
        assert!(err.to_string().contains("10000 deep"), "{err}");
    }

    #[test]
    fn nesting_built_through_the_memo_after_the_fact_is_counted() {
        // Three empty lists kept in the memo, then each appended into the one before it
        // once all exist: depth 3, though every APPEND sees an empty list.
        let mut p = vec![0x80, 2];
        for k in 0..3u8 {
            p.extend([b']', b'q', k, b'0']);
        }
        for k in 0..2u8 {
            p.extend([b'h', k, b'h', k + 1, b'a', b'0']);
        }
        p.extend([b'h', 0, b'.']);
        assert_eq!(longest_chain(&containment(&p).unwrap()).unwrap(), 3);
    }

    #[test]
    fn a_list_holding_itself_is_refused() {
        // l = []; l.append(l)
        let p = b"\x80\x02]q\x00h\x00a.";
        let err = check(p, MAX_DEPTH).unwrap_err();
        assert!(err.to_string().contains("holds itself"), "{err}");
    }

    #[test]
    fn broken_streams_are_errors() {
        for p in [
            &b"\x80\x02]"[..],
            b"\x80\x02X\xff\xff\xff\x7f",
            b"a.",
            b"\x80\x02h\x05.",
            b"\xff.",
        ] {
            assert!(check(p, MAX_DEPTH).is_err(), "{p:?}");
        }
    }
}
