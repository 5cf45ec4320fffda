package l7

import (
	"bufio"
	"io"
)

// streamWriter is what a request or response is written through: it
// buffers in bw, but copies bodies with a buffer of its own. bufio.Writer's
// ReadFrom reads a body straight into bw's buffer, which a flushingReader
// flushing bw in the middle of that read would corrupt.
type streamWriter struct {
	bw *bufio.Writer
	p  *Proxy
	n  int64 // body bytes copied
}

func (w *streamWriter) Write(b []byte) (int, error)       { return w.bw.Write(b) }
func (w *streamWriter) WriteByte(c byte) error            { return w.bw.WriteByte(c) }
func (w *streamWriter) WriteString(s string) (int, error) { return w.bw.WriteString(s) }

// ReadFrom copies a body with a pooled buffer.
func (w *streamWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.p.copyBody(w.bw, r)
	w.n += n
	return n, err
}

// flushingReader is a streamed body being written through w: before it
// waits for more of the body it flushes what w holds, so that each piece
// leaves as soon as it is read. It must not read into w's own buffer;
// streamWriter sees to that.
type flushingReader struct {
	r io.ReadCloser
	w *bufio.Writer
	p *Proxy
	n int64 // bytes copied by WriteTo
}

func (f *flushingReader) Read(b []byte) (int, error) {
	if f.w.Buffered() > 0 {
		if err := f.w.Flush(); err != nil {
			return 0, err
		}
	}
	return f.r.Read(b)
}

// WriteTo copies the body with a pooled buffer (net/http copies a chunked
// body with io.Copy, which would allocate one).
func (f *flushingReader) WriteTo(w io.Writer) (int64, error) {
	n, err := f.p.copyBody(w, f)
	f.n += n
	return n, err
}

func (f *flushingReader) Close() error { return f.r.Close() }

// interactive wraps a body of unknown length (chunked: gRPC messages,
// server-sent events, a stream of any kind) in a flushingReader over w,
// so that each piece leaves as it comes. A body of known length is
// written through w's buffer: its pieces are not awaited by anyone one by
// one, and flushing each would cost a write per piece.
func (p *Proxy) interactive(body io.ReadCloser, length int64, w *bufio.Writer) io.ReadCloser {
	if length >= 0 || body == nil {
		return body
	}
	return &flushingReader{r: body, w: w, p: p}
}

// copyBody copies r to w with a pooled buffer.
func (p *Proxy) copyBody(w io.Writer, r io.Reader) (int64, error) {
	bp := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(bp)
	var n int64
	for {
		m, err := r.Read(*bp)
		if m > 0 {
			if _, werr := w.Write((*bp)[:m]); werr != nil {
				return n, werr
			}
			n += int64(m)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}
