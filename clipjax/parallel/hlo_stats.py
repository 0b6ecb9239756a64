"""What a compiled program moves between devices, read from its optimized HLO text."""
from __future__ import annotations

import re

_COLLECTIVE = re.compile(r"^\s*%?[\w.\-]+ = (.*?) (all-gather|all-reduce|reduce-scatter|"
                         r"collective-permute|all-to-all)(-start)?\(")
_SHAPE = re.compile(r"(pred|s8|u8|s16|u16|s32|u32|s64|u64|bf16|f16|f32|f64)\[([\d,]*)\]")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "bf16": 2, "f16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}


def _shape_bytes(text: str) -> int:
  total = 0
  for dtype, dims in _SHAPE.findall(text):
    n = 1
    for d in filter(None, dims.split(",")):
      n *= int(d)
    total += n * _BYTES[dtype]
  return total


def collective_bytes(hlo: str) -> dict[str, int]:
  """Bytes produced per device by each kind of collective in one execution of the entry
  computation: a `while` body's collectives count once per known trip count."""
  comps, name = {}, None
  for line in hlo.splitlines():
    head = re.match(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$", line)
    if head and not line.startswith(" "):
      name = "ENTRY" if head.group(1) else head.group(2)
      comps[name] = []
    elif name is not None:
      comps[name].append(line)

  def total(comp: str, seen=()) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in comps.get(comp, ()):
      m = _COLLECTIVE.search(line)
      if m:
        kind = m.group(2)
        # an all-gather-start's result tuple holds the operand and the result: count the result
        shapes = m.group(1)
        size = (_shape_bytes(shapes.split("), ")[-1]) if m.group(3) and kind == "all-gather"
                else _shape_bytes(shapes))
        out[kind] = out.get(kind, 0) + size
      w = re.search(r"\swhile\(.*body=%?([\w.\-]+)", line)
      if w and w.group(1) not in seen:
        trips = re.search(r'"known_trip_count":\{"n":"(\d+)"', line)
        for k, v in total(w.group(1), seen + (w.group(1),)).items():
          out[k] = out.get(k, 0) + v * (int(trips.group(1)) if trips else 1)
      for callee in re.findall(r"(?:to_apply|calls|true_computation|false_computation)="
                               r"%?([\w.\-]+)", line):
        if callee not in seen and callee in comps:
          for k, v in total(callee, seen + (callee,)).items():
            out[k] = out.get(k, 0) + v
    return out
  return total("ENTRY")


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][\w\-]*)\((.*)$")
_PASS_THROUGH = {"copy", "bitcast", "tuple", "get-tuple-element", "collective-permute-done"}


def permutes_overlap_compute(hlo: str) -> list[str]:
  """Checks that every computation sending with collective-permute (a ring step) leaves the
  sent values out of its own compute: what a permute produces only passes through (copies,
  bitcasts, tuples) to the next iteration, while the step's compute (a loop, fusion or dot)
  works on what it already holds, so the transfer can overlap it (asynchronous start / done on
  GPU and TPU). Returns the problems found (empty: every ring step can overlap)."""
  problems, body, name = [], [], None
  for line in hlo.splitlines() + [""]:
    if line and not line.startswith(" ") and line.rstrip().endswith("{"):
      name, body = line.split("(")[0].strip(), []
    elif line.strip() == "}" or not line:
      if any("collective-permute" in b for b in body):
        problems += _check_ring_step(name, body)
      body = []
    else:
      body.append(line)
  return problems


def _check_ring_step(name: str, body: list[str]) -> list[str]:
  ops, users = {}, {}
  for line in body:
    m = _INSTRUCTION.match(line)
    if m:
      ops[m.group(1)] = m.group(2)
      for operand in re.findall(r"%([\w.\-]+)", m.group(3)):
        users.setdefault(operand, []).append(m.group(1))
  sent = [n for n, op in ops.items() if op.startswith("collective-permute")
          and op != "collective-permute-done"]
  reached, todo = set(), list(sent)
  while todo:
    for user in users.get(todo.pop(), []):
      if user not in reached:
        reached.add(user)
        todo.append(user)
  blocking = sorted(f"{u} ({ops[u]})" for u in reached if ops[u] not in _PASS_THROUGH)
  compute = [n for n, op in ops.items() if op in ("while", "fusion", "dot", "call")
             and n not in reached]
  problems = [f"{name}: the permuted values feed {blocking} in the same step"] if blocking else []
  if not compute:
    problems.append(f"{name}: no compute beside the collective-permutes to overlap")
  return problems


_COMPUTE = {"while", "fusion", "convolution", "dot", "call", "custom-call"}


def async_permutes_overlap(hlo: str) -> list[str]:
  """Checks a scheduled GPU / TPU program (`is_scheduled=true`, instructions in execution
  order): there is no synchronous collective-permute, and in every computation that sends, the
  largest transfer (a ring step's shard; the small per-row statistics that follow a tile loop
  may wait for it) runs as a collective-permute-start / -done pair with compute (a loop,
  fusion, convolution or call) scheduled between the two. Returns the problems found."""
  if "is_scheduled=true" not in hlo.split("\n", 1)[0]:
    return ["the module is not scheduled: compile for a GPU or TPU target"]
  problems, order, name = [], [], None
  for line in hlo.splitlines() + [""]:
    if line and not line.startswith(" ") and line.rstrip().endswith("{"):
      name, order = line.split("(")[0].strip(), []
    elif line.strip() == "}" or not line:
      problems += _check_async_step(name, order)
      order = []
    else:
      m = _INSTRUCTION.match(line)
      if m:
        order.append((m.group(1), m.group(2), m.group(3), line))
  return problems


def _check_async_step(name: str, order: list[tuple[str, str, str, str]]) -> list[str]:
  problems = [f"{name}: {n} is a synchronous collective-permute" for n, op, _, _ in order
              if op == "collective-permute"]
  starts = {n: i for i, (n, op, _, _) in enumerate(order) if op == "collective-permute-start"}
  if not starts:
    return problems
  size = lambda line: _shape_bytes(line.split(" collective-permute-start(")[0].split("(", 1)[1]
                                   .split(", ")[0])
  largest = max(starts, key=lambda n: size(order[starts[n]][3]))
  done = [i for i, (_, op, operands, _) in enumerate(order)
          if op == "collective-permute-done" and operands.split(")")[0].strip() == f"%{largest}"]
  if not done:
    return problems + [f"{name}: {largest} has no collective-permute-done"]
  between = [op for _, op, _, _ in order[starts[largest] + 1:done[0]] if op in _COMPUTE]
  if not between:
    problems.append(f"{name}: nothing is computed between {largest} and its done")
  return problems
