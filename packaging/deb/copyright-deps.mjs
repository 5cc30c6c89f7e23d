#!/usr/bin/env node
// Prints debian/copyright stanzas for the bundled production modules in
// NODE_MODULES (usage: copyright-deps.mjs NODE_MODULES), one per module with
// the copyright lines of its own license file, then the license texts used.
// Fails on a license without a text here, so a new dependency's license is
// read by a person before it ships.
import fs from 'node:fs';
import path from 'node:path';

const TEXTS = {
  MIT: `Permission is hereby granted, free of charge, to any person obtaining a
copy of this software and associated documentation files (the "Software"),
to deal in the Software without restriction, including without limitation
the rights to use, copy, modify, merge, publish, distribute, sublicense,
and/or sell copies of the Software, and to permit persons to whom the
Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING
FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE.`,
  ISC: `Permission to use, copy, modify, and/or distribute this software for any
purpose with or without fee is hereby granted, provided that the above
copyright notice and this permission notice appear in all copies.

THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES
WITH REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF
MERCHANTABILITY AND FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR
ANY SPECIAL, DIRECT, INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES
WHATSOEVER RESULTING FROM LOSS OF USE, DATA OR PROFITS, WHETHER IN AN
ACTION OF CONTRACT, NEGLIGENCE OR OTHER TORTIOUS ACTION, ARISING OUT OF
OR IN CONNECTION WITH THE USE OR PERFORMANCE OF THIS SOFTWARE.`,
  // Debian ships the full text; a copyright file refers to it (Debian Policy 12.5).
  'Apache-2.0': `Licensed under the Apache License, Version 2.0 (the "License"); you may
not use this file except in compliance with the License. You may obtain a
copy of the License at http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
License for the specific language governing permissions and limitations
under the License.

On Debian systems, the full text of the Apache License, Version 2.0 can be
found in the file /usr/share/common-licenses/Apache-2.0.`,
};

const top = process.argv[2];
if (!top) {
  process.stderr.write('usage: copyright-deps.mjs NODE_MODULES\n');
  process.exit(2);
}

/** Every installed module directory under dir (scoped and nested ones too), sorted. */
function modules(dir) {
  const out = [];
  for (const name of fs.readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    const full = path.join(dir, name);
    if (name.startsWith('@')) out.push(...modules(full));
    else if (fs.existsSync(path.join(full, 'package.json'))) {
      out.push(full);
      const nested = path.join(full, 'node_modules');
      if (fs.existsSync(nested)) out.push(...modules(nested));
    }
  }
  return out;
}

const used = new Set();
const stanzas = [];
for (const dir of modules(top)) {
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  const license = typeof pkg.license === 'string' ? pkg.license : '';
  if (!TEXTS[license]) {
    process.stderr.write(`copyright-deps: ${pkg.name}: license "${license}" has no text in copyright-deps.mjs; read it and add it\n`);
    process.exit(1);
  }
  used.add(license);
  const file = fs.readdirSync(dir).find((f) => /^licen[cs]e/i.test(f));
  const text = file ? fs.readFileSync(path.join(dir, file), 'utf8') : '';
  const holders = [...new Set(text.split('\n').map((l) => l.trim()).filter((l) => /^(\(c\)|copyright\b)/i.test(l) && !/notice|liable/i.test(l)))];
  if (!holders.length) {
    const author = typeof pkg.author === 'string' ? pkg.author : pkg.author?.name;
    holders.push(author ? `${author}` : `the ${pkg.name} authors`);
  }
  stanzas.push(
    [
      `Files: usr/lib/vunify/${path.relative(path.dirname(top), dir)}/*`,
      `Copyright: ${holders.join('\n ')}`,
      `License: ${license}`,
      `Comment: ${pkg.name} ${pkg.version}`,
    ].join('\n'),
  );
}
for (const license of [...used].sort()) {
  const body = TEXTS[license].split('\n').map((l) => (l ? ` ${l}` : ' .'));
  stanzas.push([`License: ${license}`, ...body].join('\n'));
}
process.stdout.write(`${stanzas.join('\n\n')}\n`);
