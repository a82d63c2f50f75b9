//! Errors name the stage that failed: a decoder output that is no image is a decode error (not
//! a conditioning one), an output folder that cannot be made is a write error (not "cannot read
//! the image"); and the decoded-pixel conversion is A1111's, value for value.

use candle_core::{Device, Tensor};
use sumi_pipeline::{to_image, PipelineError};

#[test]
fn to_image_converts_as_a1111_does() {
    // A1111: `255 · clamp((x + 1) / 2, 0, 1)` truncated to u8, channels last.
    let v: [f32; 12] = [
        -1.0, 0.0, 1.0, 2.0, -0.5, 0.5, -3.0, 0.999, 0.1, 0.2, 0.3, 0.4,
    ];
    let x = Tensor::from_slice(&v, (3, 2, 2), &Device::Cpu).unwrap();
    let img = to_image(&x).unwrap();
    assert_eq!((img.width(), img.height()), (2, 2));
    // pixel (0,0) = channels 0,4,8 of v; (1,0) = 1,5,9; (0,1) = 2,6,10; (1,1) = 3,7,11
    let expect: [u8; 12] = [0, 63, 140, 127, 191, 153, 255, 0, 165, 255, 254, 178];
    assert_eq!(img.as_raw().as_slice(), &expect);
}

#[test]
fn a_decoder_output_that_is_no_image_is_a_decode_error() {
    let x = Tensor::zeros((4, 2, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    let e = to_image(&x).unwrap_err();
    assert!(matches!(e, PipelineError::Decode(_)), "{e:?}");
    assert_eq!(e.to_string(), "decode: decoded image has 4 channels");
}

#[test]
fn an_output_folder_error_says_it_could_not_be_created() {
    let e = PipelineError::OutputDir {
        path: "out/x".into(),
        source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
    };
    let s = e.to_string();
    assert!(
        s.starts_with("out/x: cannot create the output folder: "),
        "{s}"
    );
    assert!(!s.contains("read"), "{s}");
}
