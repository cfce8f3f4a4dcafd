package streamtest

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math/rand/v2"
	"sync"
)

// A file's bytes are a 64 KiB pseudo-random block, seeded from the video and type,
// repeated with every repetition XORed by a byte derived from its index: cheap to
// produce at any offset, different between videos and types, and a body served
// from the wrong offset does not match.
const (
	blockBits = 16
	blockSize = 1 << blockBits
	blockMask = blockSize - 1
)

var blocks sync.Map // "uid/type" -> []byte of blockSize

func block(uid string, t DownloadType) []byte {
	key := uid + "/" + string(t)
	if b, ok := blocks.Load(key); ok {
		return b.([]byte)
	}
	seed := sha256.Sum256([]byte("streamtest/" + key))
	b := make([]byte, blockSize)
	_, _ = rand.NewChaCha8(seed).Read(b)
	v, _ := blocks.LoadOrStore(key, b)
	return v.([]byte)
}

// mask is the byte the repetition at index i of the block is XORed with.
func mask(i uint64) byte { return byte((i * 0x9E3779B97F4A7C15) >> 56) }

// fill writes the bytes of the file at [off, off+len(dst)) into dst.
func fill(blk []byte, dst []byte, off int64) {
	pos := uint64(off)
	for len(dst) > 0 {
		i := pos & blockMask
		m := min(len(dst), blockSize-int(i))
		src := blk[i : int(i)+m]
		d := dst[:m]
		k := mask(pos >> blockBits)
		k8 := uint64(k) * 0x0101010101010101
		j := 0
		for ; j+8 <= m; j += 8 {
			binary.LittleEndian.PutUint64(d[j:], binary.LittleEndian.Uint64(src[j:])^k8)
		}
		for ; j < m; j++ {
			d[j] = src[j] ^ k
		}
		dst = dst[m:]
		pos += uint64(m)
	}
}

// Content returns the n bytes the emulator serves at offset off of the download of
// type t of video uid when its Layout is Synthetic. The bytes at an offset do not
// depend on the file's size. OpenFile serves every layout.
func Content(uid string, t TypeName, off, n int64) []byte {
	if off < 0 || n <= 0 {
		return nil
	}
	b := make([]byte, n)
	fill(block(uid, typeOf(t)), b, off)
	return b
}

// NewContentReader returns a reader over the size bytes of the download of type t
// of video uid, as the emulator serves them when its Layout is Synthetic. It
// allocates nothing per read.
func NewContentReader(uid string, t TypeName, size int64) io.ReadSeeker {
	return &contentReader{blk: block(uid, typeOf(t)), size: size}
}

type contentReader struct {
	blk  []byte
	size int64
	off  int64
}

func (r *contentReader) Read(p []byte) (int, error) {
	if r.off >= r.size {
		return 0, io.EOF
	}
	if rest := r.size - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	fill(r.blk, p, r.off)
	r.off += int64(len(p))
	return len(p), nil
}

func (r *contentReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("streamtest: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("streamtest: negative position")
	}
	r.off = abs
	return abs, nil
}
