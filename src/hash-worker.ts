/*
 * A hashing thread (see hash.ts): receives batches of HashJobs, answers each
 * batch with one HashResult per job, in order. Root descriptors are the
 * process's, so the worker opens files confined beneath the same roots.
 */
import { parentPort } from 'node:worker_threads';
import { CHUNK, getHasher, hashJob, type HashJob } from './hash.js';

const h = await getHasher();
const buf = Buffer.allocUnsafe(CHUNK);
parentPort!.on('message', (jobs: HashJob[]) => {
  parentPort!.postMessage(jobs.map((job) => hashJob(h, job, buf)));
});
