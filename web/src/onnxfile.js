// An ONNX file's loops checked before onnxruntime-web sees it (runtime/onnxfile.py's
// _first_unbounded_loop, rule for rule).
//
// onnxruntime runs a Loop until its trip count or its condition says stop, and a Scan or
// SequenceMap once per row of a tensor made at run time: a hostile graph of a few bytes would
// hold onnxruntime's worker, and so every later draw, for good. The format's loops (the
// learned prior's solver steps) run a fixed number of times, so every Loop's trip count must be
// an int64 initializer of its graph or an enclosing one, at most MAX_LOOP_TRIPS, and so must the
// product of the counts of loops inside loops; Scan and SequenceMap are refused. Only the
// protobuf fields on the way to a node are read, each length checked against what is left.

import { ModelError } from './manifest.js';

export const MAX_LOOP_TRIPS = 1000n;
const UNCOUNTED_LOOPS = new Set(['Scan', 'SequenceMap']);
const MAX_DEPTH = 64; // graphs inside graphs; an exported one nests 2 deep
const MAX_FIELDS = 1 << 22; // fields visited in all; the shipped graphs have a few thousand

// Field numbers (onnx.proto) and wire types.
const MODEL_GRAPH = 7;
const MODEL_FUNCTION = 25;
const FUNCTION_NODE = 7;
const GRAPH_NODE = 1;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_SPARSE_INITIALIZER = 15;
const NODE_INPUT = 1;
const NODE_OUTPUT = 2;
const NODE_OP_TYPE = 4;
const NODE_ATTRIBUTE = 5;
const NODE_DOMAIN = 7;
const ATTRIBUTE_GRAPHS = new Set([6, 11]); // g, graphs
const TENSOR_DIMS = 1;
const TENSOR_DATA_TYPE = 2;
const TENSOR_INT64_DATA = 7;
const TENSOR_NAME = 8;
const TENSOR_RAW_DATA = 9;
const INT64 = 7n;
const [VARINT, FIXED64, LENGTH_DELIMITED, FIXED32] = [0, 1, 2, 5];

class Malformed extends Error {}

const text = new TextDecoder();

// Throws ModelError when the graph `bytes` (of the file `name`) could loop without end.
export function checkGraph(bytes, name) {
  let endless;
  try {
    endless = firstUnboundedLoop(bytes);
  } catch (error) {
    if (!(error instanceof Malformed)) throw error;
    throw new ModelError(`${name} is not a well-formed ONNX file: ${error.message}`);
  }
  if (endless !== null) {
    throw new ModelError(
      `${name} holds ${endless}; the format's loops run a fixed number of times, at most ${MAX_LOOP_TRIPS}, so it is not loaded`,
    );
  }
}

function firstUnboundedLoop(model) {
  const budget = { left: MAX_FIELDS };
  // [a graph or a local function's body, the field its nodes are in, the constants in scope,
  // how many times it runs, depth]; a function has no initializers, so a Loop in one is refused.
  const graphs = [];
  for (const [number, value] of fields(model, budget)) {
    if (number === MODEL_GRAPH && value instanceof Uint8Array)
      graphs.push([value, GRAPH_NODE, new Map(), 1n, 1]);
    else if (number === MODEL_FUNCTION && value instanceof Uint8Array)
      graphs.push([value, FUNCTION_NODE, new Map(), 1n, 1]);
  }
  while (graphs.length) {
    const [data, nodeField, outer, runs, depth] = graphs.pop();
    if (depth > MAX_DEPTH) throw new Malformed(`graphs nest deeper than ${MAX_DEPTH}`);
    const constants = new Map(outer);
    const computed = new Set(); // names this graph's inputs and nodes define: not constants
    const nodes = [];
    const inFunction = nodeField !== GRAPH_NODE;
    for (const [number, value] of fields(data, budget)) {
      if (!(value instanceof Uint8Array) || (inFunction && number !== nodeField)) continue;
      if (number === GRAPH_INITIALIZER) {
        const [tensorName, count] = int64Scalar(value, budget);
        constants.set(tensorName, count);
      } else if (number === GRAPH_SPARSE_INITIALIZER) {
        for (const [field, values] of fields(value, budget))
          if (field === 1 && values instanceof Uint8Array) computed.add(int64Scalar(values, budget)[0]);
      } else if (number === GRAPH_INPUT) {
        computed.add(valueName(value, budget));
      } else if (number === nodeField) {
        const node = readNode(value, budget);
        for (const output of node.outputs) computed.add(output);
        nodes.push(node);
      }
    }
    // A subgraph's input or a node's output of an outer initializer's name hides it, and a
    // graph input of an initializer's name could be fed another value.
    for (const name of computed) constants.set(name, null);
    for (const { op, inputs, subgraphs } of nodes) {
      let innerRuns = runs;
      if (UNCOUNTED_LOOPS.has(op)) return `a ${op}, which runs once per row of a tensor made at run time`;
      if (op === 'Loop') {
        const trips = inputs[0] ?? '';
        if (!trips) return 'a Loop without a trip count';
        const count = constants.get(trips) ?? null;
        if (count === null || count < 0n || count > MAX_LOOP_TRIPS) {
          const shown = count === null ? 'not an int64 initializer' : `${count}`;
          return `a Loop whose trip count ${JSON.stringify(trips).replaceAll('"', "'")} is ${shown}`;
        }
        innerRuns = runs * (count > 1n ? count : 1n);
        if (innerRuns > MAX_LOOP_TRIPS)
          return `a Loop nested in loops that run its body ${innerRuns} times in all`;
      }
      for (const graph of subgraphs) graphs.push([graph, GRAPH_NODE, constants, innerRuns, depth + 1]);
    }
  }
  return null;
}

// A NodeProto's op type (empty outside the default domain), inputs, outputs and subgraphs.
function readNode(data, budget) {
  let op = '';
  let domain = '';
  const inputs = [];
  const outputs = [];
  const subgraphs = [];
  for (const [number, value] of fields(data, budget)) {
    if (!(value instanceof Uint8Array)) continue;
    if (number === NODE_OUTPUT) outputs.push(text.decode(value));
    else if (number === NODE_OP_TYPE) op = text.decode(value);
    else if (number === NODE_DOMAIN) domain = text.decode(value);
    else if (number === NODE_INPUT) inputs.push(text.decode(value));
    else if (number === NODE_ATTRIBUTE) {
      for (const [field, inner] of fields(value, budget))
        if (ATTRIBUTE_GRAPHS.has(field) && inner instanceof Uint8Array) subgraphs.push(inner);
    }
  }
  return { op: domain === '' || domain === 'ai.onnx' ? op : '', inputs, outputs, subgraphs };
}

function valueName(data, budget) {
  for (const [number, value] of fields(data, budget))
    if (number === 1 && value instanceof Uint8Array) return text.decode(value);
  return '';
}

// A TensorProto's name and, if it is one int64 number, that number as a BigInt (else null).
function int64Scalar(data, budget) {
  let name = '';
  let dtype = 0n;
  let dims = 0;
  const values = [];
  for (const [number, value] of fields(data, budget)) {
    if (number === TENSOR_NAME && value instanceof Uint8Array) name = text.decode(value);
    else if (number === TENSOR_DATA_TYPE && typeof value === 'bigint') dtype = value;
    else if (number === TENSOR_DIMS) dims += 1;
    else if (number === TENSOR_INT64_DATA) {
      if (value instanceof Uint8Array) {
        for (let at = 0; at < value.length;) {
          const [packed, next] = varint(value, at);
          values.push(packed);
          at = next;
        }
      } else values.push(value);
    } else if (number === TENSOR_RAW_DATA && value instanceof Uint8Array && value.length === 8) {
      values.push(new DataView(value.buffer, value.byteOffset, 8).getBigInt64(0, true));
    }
  }
  if (dtype !== INT64 || dims > 1 || values.length !== 1) return [name, null];
  return [name, BigInt.asIntN(64, values[0])];
}

// [field number, value] of each field: a BigInt for varints (1n, "present", for fixed-width
// values), the bytes for length-delimited ones.
function* fields(data, budget) {
  let at = 0;
  while (at < data.length) {
    if (--budget.left < 0) throw new Malformed(`more than ${MAX_FIELDS} fields`);
    const [key, afterKey] = varint(data, at);
    at = afterKey;
    const number = Number(key >> 3n);
    const wire = Number(key & 7n);
    if (number === 0) throw new Malformed(`field number 0 at byte ${at}`);
    let value;
    if (wire === VARINT) [value, at] = varint(data, at);
    else if (wire === LENGTH_DELIMITED) {
      const [length, start] = varint(data, at);
      if (length > BigInt(data.length - start))
        throw new Malformed(`field ${number} runs past the end of its message`);
      at = start + Number(length);
      value = data.subarray(start, at);
    } else if (wire === FIXED64 || wire === FIXED32) {
      const size = wire === FIXED64 ? 8 : 4;
      if (size > data.length - at) throw new Malformed(`field ${number} is cut short`);
      value = 1n;
      at += size;
    } else throw new Malformed(`wire type ${wire} (groups or invalid) in field ${number}`);
    yield [number, value];
  }
}

// The base-128 integer at `at` as a BigInt, and the position after it (at most 10 bytes).
function varint(data, at) {
  let result = 0n;
  for (let shift = 0n; shift < 70n; shift += 7n) {
    if (at >= data.length) throw new Malformed('a number is cut short at the end');
    const byte = data[at++];
    result |= BigInt(byte & 0x7f) << shift;
    if (byte < 0x80) return [result, at];
  }
  throw new Malformed(`a number longer than 10 bytes before byte ${at}`);
}
