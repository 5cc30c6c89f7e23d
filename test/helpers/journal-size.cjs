// Preloaded (node -r) into a vunify run by tests: before the run deletes its
// journal, append "<bytes> <lines>" of it to the file named by
// VUNIFY_TEST_JOURNAL_SIZES. The journal of a run that ends well is gone by
// the time a test could look at it.
const fs = require('fs');
const unlinkSync = fs.unlinkSync;
fs.unlinkSync = function (p) {
  if (/\/journal\.[^/]*$/.test(String(p)) && process.env.VUNIFY_TEST_JOURNAL_SIZES) {
    const text = fs.readFileSync(p, 'utf8');
    fs.appendFileSync(process.env.VUNIFY_TEST_JOURNAL_SIZES, `${Buffer.byteLength(text)} ${text.split('\n').length - 1}\n`);
  }
  return unlinkSync.apply(this, arguments);
};
