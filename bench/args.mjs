// Command-line flags for the bench scripts: `flag('--quick')` is true when
// given; `opt('--dir', dflt)` is the word after it, or dflt. Exits 0 with
// `usage` on -h/--help.
export function args(usage, argv = process.argv.slice(2)) {
  const flag = (name) => argv.includes(name);
  const opt = (name, dflt) => {
    const i = argv.indexOf(name);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
  };
  if (flag('-h') || flag('--help')) {
    console.log(usage);
    process.exit(0);
  }
  return { flag, opt };
}
