import { accessSync, constants } from 'node:fs';
import { chromium, type Browser, type Locator, type Page } from 'playwright-core';

/** Where Debian and Ubuntu put Chromium, in the order they are tried. */
const CHROMIUM_CANDIDATES = ['/usr/bin/chromium', '/usr/bin/chromium-browser'];

/**
 * The Chromium executable to drive: `CHROMIUM_PATH` when set (a wrong path then fails the launch
 * rather than skipping), else the first system Chromium found, else undefined.
 */
export function findChromium(environment: NodeJS.ProcessEnv = process.env): string | undefined {
  const explicit = environment.CHROMIUM_PATH;
  if (explicit !== undefined && explicit !== '') return explicit;
  return CHROMIUM_CANDIDATES.find((candidate) => {
    try {
      accessSync(candidate, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/**
 * Launches the system Chromium headless through playwright-core, which ships no browser of its own.
 * `--no-sandbox` because CI runs as root, where Chromium refuses its own sandbox.
 */
export async function launchChromium(executablePath: string): Promise<Browser> {
  return chromium.launch({ executablePath, headless: true, args: ['--no-sandbox'] });
}

/** Which run to open, and where its Web UI answers. */
export interface RunPageTarget {
  uiPort: number;
  namespace: string;
  workflowId: string;
  runId: string;
}

/**
 * One workflow run's page in the Temporal Web UI (2.x), driven the way a person uses it: through
 * the visible tabs, menus and form fields, found by their roles and labels.
 */
export class RunPage {
  private constructor(private readonly page: Page) {}

  /** Opens the run on its "User Metadata" tab, where the run's current details are rendered. */
  static async open(browser: Browser, target: RunPageTarget): Promise<RunPage> {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const { uiPort, namespace, workflowId, runId } = target;
    const path = [namespace, 'workflows', workflowId, runId, 'user-metadata'].map(encodeURIComponent);
    await page.goto(`http://127.0.0.1:${uiPort}/namespaces/${path.join('/')}`);
    await page.getByRole('heading', { name: 'Current Details' }).waitFor();
    return new RunPage(page);
  }

  /**
   * The text of the run's current details once it matches `pattern`. The Web UI renders the
   * workflow's Markdown inside a frame of its own, so the text is read from that frame.
   */
  async currentDetailsMatching(pattern: RegExp): Promise<string> {
    const details = this.page.frameLocator('#user-metadata-current-details').locator('body');
    await details.getByText(pattern).first().waitFor();
    return details.innerText();
  }

  /**
   * Opens "More Actions" → "Send a Signal", picks `signalName` from the names the worker
   * reports for the workflow, and types `input` into the JSON editor, leaving the form open.
   */
  async fillSignalForm(signalName: string, input: string): Promise<void> {
    await this.page.getByRole('button', { name: 'More Actions' }).click();
    await this.page.getByRole('menuitem', { name: 'Send a Signal' }).click();
    const form = this.signalForm();
    await form.getByRole('button', { name: 'Select a signal' }).click();
    await form.getByRole('option', { name: signalName, exact: true }).click();
    await form.getByRole('listbox').waitFor({ state: 'hidden' });
    // The JSON editor is CodeMirror: a contenteditable with the field's label as its name.
    await form.getByRole('textbox', { name: 'Data' }).fill(input);
  }

  /** Submits the open signal form and waits for the Web UI to confirm the signal was sent. */
  async submitSignalForm(): Promise<void> {
    const form = this.signalForm();
    await form.getByRole('button', { name: 'Submit' }).click();
    await form.waitFor({ state: 'hidden' });
    await this.page.getByText('Workflow signaled.').first().waitFor();
  }

  /** Waits until the page shows the run's status, e.g. `Completed`, as the Web UI refreshes it. */
  async waitForStatus(status: string): Promise<void> {
    await this.page.getByRole('status').getByText(status, { exact: true }).first().waitFor();
  }

  /** A PNG of the "Current Details" panel: its heading and the rendered Markdown below it. */
  async currentDetailsPicture(): Promise<Buffer> {
    const heading = await this.page.getByRole('heading', { name: 'Current Details' }).boundingBox();
    const details = await this.page.locator('#user-metadata-current-details').boundingBox();
    if (heading === null || details === null) throw new Error('The current details are not on screen');
    // The heading sits in a banner with 8px of padding; the frame spans the panel's width.
    const top = heading.y - 8;
    return this.page.screenshot({
      fullPage: true,
      clip: { x: details.x, y: top, width: details.width, height: details.y + details.height - top },
    });
  }

  /** A PNG of the open signal form. */
  async signalFormPicture(): Promise<Buffer> {
    return this.signalForm().screenshot();
  }

  /** Closes the page; the browser stays up for the file's other tests. */
  async close(): Promise<void> {
    await this.page.close();
  }

  private signalForm(): Locator {
    return this.page.getByRole('dialog', { name: 'Send a Signal' });
  }
}

/**
 * Writes `pictures` side by side into one PNG at `path`, laid out by the browser itself, so a
 * README can show the run's details and the form that acts on them together.
 */
export async function writeSideBySide(browser: Browser, pictures: Buffer[], path: string): Promise<void> {
  // Room for two pictures of a 1400×900 page, so none is squeezed to fit.
  const page = await browser.newPage({ viewport: { width: 2900, height: 1000 } });
  try {
    const images = pictures
      .map((picture) => `<img src="data:image/png;base64,${picture.toString('base64')}">`)
      .join('');
    await page.setContent(
      '<body style="margin:0"><div style="display:inline-flex;gap:24px;align-items:flex-start;' +
        `padding:24px;background:#e5e7eb">${images}</div></body>`,
    );
    await page.locator('body > div').screenshot({ path });
  } finally {
    await page.close();
  }
}
