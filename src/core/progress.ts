/*
 * What a long stage reports as it goes. The stages only call this interface;
 * the command line decides whether anyone sees it (cli/progress.ts draws bars
 * on a terminal, everything else gets noProgress).
 */
export interface Progress {
  stage(name: string, total: number, unit?: 'count' | 'bytes'): void;
  tick(n: number): void;
  stop(): void;
}

export const noProgress: Progress = { stage() {}, tick() {}, stop() {} };
