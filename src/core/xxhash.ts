/*
 * XXH64 in WebAssembly (xxhash-wasm), for the little hashing done outside
 * the addon: checksums of the hash cache, manifest policy digests, and the
 * reference path the addon's hash is tested against. Pure: loads without
 * the native addon.
 */
import type xxhash from 'xxhash-wasm';

export type Hasher = Awaited<ReturnType<typeof xxhash>>;
let hasherPromise: Promise<Hasher> | undefined;
// Loaded when first used (the reference path, tests, benchmarks): compiling
// its WebAssembly at start-up slowed every run down.
export const getHasher = (): Promise<Hasher> => (hasherPromise ??= import('xxhash-wasm').then((m) => m.default()));
