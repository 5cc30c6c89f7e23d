/*
 * XXH64 in WebAssembly (xxhash-wasm), for the little hashing done outside
 * the addon: the manifests' policy digests, and the reference the addon's
 * XXH64 (the cache checksums) is tested against. The content hash is XXH3
 * (core/xxh3.ts, native/xxh3.c). Pure: loads without the native addon.
 */
import type xxhash from 'xxhash-wasm';

export type Hasher = Awaited<ReturnType<typeof xxhash>>;
let hasherPromise: Promise<Hasher> | undefined;
// Loaded when first used (the reference path, tests, benchmarks): compiling
// its WebAssembly at start-up slowed every run down.
export const getHasher = (): Promise<Hasher> => (hasherPromise ??= import('xxhash-wasm').then((m) => m.default()));
